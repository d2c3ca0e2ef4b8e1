"""The distillation teacher: loading (base, merged, or base + LoRA adapter), the shared-vocabulary
check, its fingerprint, and its logits at supervised positions of a padding-free batch."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, ModelError
from ..models.adapters import unwrap
from ..models.forward import decoder_hidden_states

log = logging.getLogger("tunesmith")

_SEQUENCE_LEVEL_HINT = (
    "Logit distillation compares the two models token by token, so they must "
    "share a vocabulary. Use sequence-level distillation instead: `tunesmith "
    "distill generate --teacher TEACHER --prompts PROMPTS.jsonl --out "
    "teacher_answers.jsonl`, then train the student on that file with "
    "method: sft."
)


def resolve_teacher(teacher: str, adapter: str | None) -> tuple[str, str | None]:
    """(base model folder, adapter folder or None) of ``distill.teacher`` / ``teacher_adapter``.

    A run directory stands for its ``final/`` folder; an adapter folder given as ``teacher``
    names its base model in ``adapter_config.json``.
    """
    from ..models.generate import resolve_model_ref

    if adapter is not None:
        from .. import rundir

        a = rundir.model_folder(adapter)
        if not (a / "adapter_config.json").is_file():
            raise ModelError(
                f"distill.teacher_adapter {adapter} has no adapter_config.json "
                "(expected a LoRA adapter folder or a run directory)"
            )
        adapter = str(a)
    from ..models.gguf_import import resolve_model_path

    base, adapter = resolve_model_ref(teacher, adapter)
    if not Path(resolve_model_path(base), "config.json").is_file():
        raise ModelError(f"distill.teacher: {base} is not a model folder (no config.json) or GGUF file")
    return base, adapter


def teacher_tokenizer_dir(base: str, adapter: str | None) -> str:
    """The folder whose tokenizer the teacher was trained with (the adapter's when saved there)."""
    if adapter and Path(adapter, "tokenizer_config.json").is_file():
        return adapter
    return base


def check_same_vocabulary(student_tok, teacher_tok, student_name: str, teacher_name: str) -> None:
    """Raise ConfigError naming the first differing tokens unless both map ids to the same tokens."""
    s = {i: t for t, i in student_tok.get_vocab().items()}
    t = {i: t for t, i in teacher_tok.get_vocab().items()}
    diffs = [
        i
        for i in range(max(len(s), len(t), max(s, default=-1) + 1, max(t, default=-1) + 1))
        if s.get(i) != t.get(i)
    ]
    if not diffs:
        return
    shown = "; ".join(
        f"id {i}: teacher {t.get(i, '(none)')!r} vs student {s.get(i, '(none)')!r}" for i in diffs[:3]
    )
    more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
    raise ConfigError(
        f"the teacher's tokenizer ({teacher_name}, {len(t)} tokens) and the student's "
        f"({student_name}, {len(s)} tokens) differ: {shown}{more}. " + _SEQUENCE_LEVEL_HINT
    )


def teacher_dtype(device: torch.device) -> torch.dtype:
    """bf16 weights on CUDA devices that support them (the teacher never trains), else fp32."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_teacher(
    base: str, adapter: str | None, device: torch.device, load_in_4bit: bool = False
) -> nn.Module:
    """The frozen teacher in eval mode with tunesmith's varlen attention.

    ``load_in_4bit``: linear layers in 4-bit NF4 with double quantisation (QLoRA's format, via
    :mod:`tunesmith.models.quantize`). An adapter is merged into the weights (one matmul per
    layer instead of two) unless the base is quantised, where merging would round it to 4 bits.
    """
    from ..models.attention import register as register_attention
    from ..models.load import load_causal_lm

    dtype, quant = teacher_dtype(device), None
    if load_in_4bit:
        from ..models.quantize import QuantSpec, require_bitsandbytes

        require_bitsandbytes()
        quant = QuantSpec(bits=4, compute_dtype=dtype)
    model = load_causal_lm(base, dtype=dtype, device=device, quantization=quant)
    if adapter:
        from ..models.adapters import open_adapter

        model = open_adapter(model, adapter)
        if quant is None:
            model = model.merge_and_unload()
    model.set_attn_implementation(register_attention())
    model.config.use_cache = False
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def model_vocab_size(model_or_path) -> int:
    """Rows of the LM head (may exceed the tokenizer's length: padded embedding tables)."""
    if isinstance(model_or_path, nn.Module):
        return int(unwrap(model_or_path).get_output_embeddings().weight.shape[0])
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_or_path)
    size = getattr(config, "vocab_size", None)
    if size is None and hasattr(config, "get_text_config"):
        size = config.get_text_config().vocab_size
    return int(size)


@contextlib.contextmanager
def attention(model: nn.Module, name: str | None = None):
    """Temporarily switch ``model``'s attention: to tunesmith's padding-free varlen function
    (``name`` None; packed batches) or to ``"stock"`` SDPA / eager for padded generation —
    transformers builds no padding mask for an attention name it does not know."""
    from ..models.attention import padding_aware_attention
    from ..models.attention import register as register_attention

    hf = unwrap(model)
    before = hf.config._attn_implementation
    if name == "stock":  # the same choice as models.attention.padded_attention
        name = padding_aware_attention(hf) or before
    name = name or register_attention()
    if name != before:
        hf.set_attn_implementation(name)
    try:
        yield model
    finally:
        if name != before:
            hf.set_attn_implementation(before)


@torch.no_grad()
def teacher_hidden(teacher: nn.Module, batch) -> torch.Tensor:
    """Teacher's final hidden states ``[N, H_t]`` at the batch's target positions (no grad)."""
    device = next(teacher.parameters()).device
    b = batch.to(device)
    return decoder_hidden_states(teacher, b)[0].index_select(0, b.target_positions)


def fingerprint(base: str, adapter: str | None) -> str:
    """A 16-hex-digit id of the teacher's weights, cheap even for large models.

    Reads config.json and, per safetensors file, its size, its header (tensor names, shapes,
    offsets) and 16 evenly spaced 64 KiB blocks; adapter folders are hashed in full (small).
    Retraining changes practically every byte, so the samples catch it.
    """
    h = hashlib.sha256()
    for folder, full in ((base, False), (adapter, True)):
        if folder is None:
            continue
        root = Path(folder)
        for f in sorted(p for p in root.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors")):
            if f.name.startswith("tokenizer") or f.name in (
                "special_tokens_map.json",
                "generation_config.json",
            ):
                continue
            h.update(f.name.encode())
            size = f.stat().st_size
            h.update(str(size).encode())
            with open(f, "rb") as fh:
                if full or size <= (1 << 22):
                    h.update(fh.read())
                    continue
                head_len = int.from_bytes(fh.read(8), "little")
                h.update(fh.read(min(head_len, 1 << 26)))
                for i in range(16):
                    fh.seek(i * (size - (1 << 16)) // 15)
                    h.update(fh.read(1 << 16))
    return h.hexdigest()[:16]


def describe(base: str, adapter: str | None) -> str:
    return f"{base} + adapter {adapter}" if adapter else base
