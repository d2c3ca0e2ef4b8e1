"""A training checkpoint's trainable tensors written as a PEFT adapter folder.

A checkpoint (``RUN/checkpoints/step-N``, :mod:`tunesmith.engine.checkpoint`) holds the trainable
tensors under the names training gave them; PEFT's interchange format (``adapter_config.json`` +
``adapter_model.safetensors``) is what serving, continued training (``adapter.init_from``) and
other tools load. :func:`checkpoint_adapter` converts one into the other; the jobs service uses it
to serve a checkpoint model (``…:ckpt-step-N``) and to continue fine-tuning from one.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from .. import rundir
from ..errors import CheckpointError, ModelError


class UnsupportedAdapter(ModelError):
    """The run's adapter is not one a checkpoint can be written as (only LoRA is)."""


class AdapterMismatch(CheckpointError):
    """The checkpoint's tensors are not those of the adapter its run's config attaches."""


def checkpoint_adapter(base: str, ckpt: Path, dest: Path) -> Path:
    """Write checkpoint ``ckpt``'s trainable tensors as a PEFT adapter folder at ``dest``.

    The adapter is rebuilt from the run's resolved config exactly as training attached it, on a
    ``meta``-device copy of the base ``base`` (no weights are read), so the tensor names and
    shapes of the checkpoint are checked against it (:class:`AdapterMismatch` if they differ);
    PEFT then saves the tensors under its own naming, with the run's tokenizer (and chat
    template) beside them. Written to a temporary sibling and renamed, so a concurrent reader
    never sees half a folder; if another writer renamed first, its folder stays.
    :class:`UnsupportedAdapter` unless the run trained a LoRA adapter."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..config import load_config
    from ..engine.checkpoint import load_checkpoint
    from ..models.adapters import attach_adapter
    from ..models.load import MODEL_INIT_LOCK, load_tokenizer

    run = ckpt.parent.parent
    cfg = load_config(rundir.RunDir(run).resolved_config)
    if cfg.adapter.type != "lora":
        raise UnsupportedAdapter(f"checkpoint {ckpt.name}: a {cfg.adapter.type} run (only LoRA is supported)")
    tensors = load_checkpoint(ckpt)["trainable"]
    with MODEL_INIT_LOCK, torch.device("meta"):
        model = attach_adapter(
            AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base)), cfg.adapter
        )
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(tensors) or any(
        tuple(params[n].shape) != tuple(t.shape) for n, t in tensors.items()
    ):
        raise AdapterMismatch(f"checkpoint {ckpt.name} does not match its run's adapter")
    for peft_cfg in model.peft_config.values():
        peft_cfg.base_model_name_or_path = base
    tmp = dest.with_name(f".tmp-{dest.name}-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, state_dict=tensors, safe_serialization=True)
    load_tokenizer(cfg.model.tokenizer or base, cfg.model.chat_template).save_pretrained(tmp)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, dest)
    except OSError:  # a concurrent writer exported it first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
