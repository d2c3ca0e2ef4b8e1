"""Attach PEFT LoRA / DoRA / rsLoRA adapters, or prepare a model for full fine-tuning."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..config import AdapterConfig
from ..errors import ConfigError, ModelError


def linear_module_names(model: nn.Module) -> list[str]:
    """Leaf names of every linear projection except the output (LM) head, sorted.

    Covers ``nn.Linear`` and subclasses (bitsandbytes' quantised linears derive from it).
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    # A reward model's scalar head is trained in full (modules_to_save), never LoRA-adapted.
    heads = {id(head), id(getattr(model, "score", None))} if is_sequence_classifier(model) else {id(head)}
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and id(module) not in heads:
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def attach_adapter(model: nn.Module, cfg: AdapterConfig) -> nn.Module:
    """Wrap ``model`` in a PEFT LoRA/DoRA model, or make every parameter trainable (type none)."""
    if cfg.type == "none":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from .quantize import import_peft

    import_peft()
    from peft import LoraConfig, get_peft_model

    if cfg.targets == "all-linear":
        targets = linear_module_names(model)
    elif isinstance(cfg.targets, str):
        targets = [cfg.targets]
    else:
        targets = list(cfg.targets)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in present]
    if missing or not targets:
        raise ConfigError(
            f"config: adapter.targets {missing or targets} not found in the model; "
            f"its linear layers are: {', '.join(linear_module_names(model))}"
        )
    lora = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        layers_to_transform=top_layer_indices(model, cfg.top_layers),
        use_dora=cfg.type == "dora",
        use_rslora=cfg.rslora,
        modules_to_save=list(cfg.modules_to_save) or None,
        # SEQ_CLS makes PEFT train and save the reward head (``score``) in full.
        task_type="SEQ_CLS" if is_sequence_classifier(model) else "CAUSAL_LM",
    )
    if not any(isinstance(m, nn.Linear) and type(m) is not nn.Linear for m in model.modules()):
        # Plain linears only (no quantised subclass): PEFT builds tunesmith's fused LoRA layer.
        from .lora_linear import register_fused

        register_fused(lora)
    model = get_peft_model(model, lora)
    if cfg.init_from is not None:
        load_init_adapter(model, cfg.init_from, targets)
    return model


def top_layer_indices(model: nn.Module, top: int | None) -> list[int] | None:
    """Indices of the top ``top`` transformer blocks (``adapter.top_layers``); None for all."""
    if top is None:
        return None
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    n = getattr(config, "num_hidden_layers", None)
    if not isinstance(n, int):
        raise ConfigError("config: 'adapter.top_layers' needs a model whose config has num_hidden_layers")
    if top > n:
        raise ConfigError(f"config: 'adapter.top_layers' is {top} but the model has {n} blocks")
    return list(range(n - top, n))


ADAPTER_WEIGHTS = "adapter_model.safetensors"


def check_adapter_dir(folder) -> None:
    """ModelError unless ``folder`` is a PEFT adapter whose weights are safetensors.

    PEFT falls back to ``adapter_model.bin`` (a pickle) when the safetensors file is missing; it
    reads that with ``weights_only=True``, so a hostile pickle does not run, but it fails with a
    traceback. tunesmith reads weights from safetensors only, so such a folder is refused here,
    before PEFT sees it, with one line naming the file."""
    from pathlib import Path

    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        raise ModelError(f"adapter folder {folder} has no adapter_config.json")
    if not (folder / ADAPTER_WEIGHTS).is_file():
        pickles = sorted(
            p.name for p in folder.glob("adapter_model.*") if p.suffix in (".bin", ".pt", ".pth")
        )
        found = (
            f" (found {pickles[0]}: pickled weights are not loaded; convert it to safetensors)"
            if pickles
            else ""
        )
        raise ModelError(f"adapter folder {folder} has no {ADAPTER_WEIGHTS}{found}")


def open_adapter(model: nn.Module, folder, **kwargs) -> nn.Module:
    """``PeftModel.from_pretrained(model, folder, **kwargs)`` after :func:`check_adapter_dir`:
    the one place tunesmith opens a saved adapter for inference, merging or scoring."""
    from .quantize import import_peft

    import_peft()
    from peft import PeftModel

    check_adapter_dir(folder)
    return PeftModel.from_pretrained(model, str(folder), **kwargs)


def load_init_adapter(model: nn.Module, folder: str, targets: list[str]) -> None:
    """``adapter.init_from``: copy the adapter weights saved in ``folder`` into the freshly
    attached adapter of ``model`` (a PEFT model), bitwise (a dtype cast only if they differ).

    config.load has checked type / r / alpha / rslora and the folder's files; here the resolved
    ``targets`` and every tensor name and shape are checked against the saved adapter, so a
    mismatch is a ConfigError naming the field, never a silently partial load. A model built
    on the ``meta`` device (shape-only copies: memory estimates, checkpoint export) has no
    storage to load into and is left as is."""
    import json
    from pathlib import Path

    from .quantize import import_peft

    import_peft()
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    if any(p.is_meta for p in model.parameters() if p.requires_grad):
        return
    where = f"config: 'adapter.init_from' {folder}"
    saved_cfg = json.loads((Path(folder) / "adapter_config.json").read_text(encoding="utf-8"))
    saved_targets = saved_cfg.get("target_modules")
    # Compared by the modules they select, not as written: a regex of exact module names or a
    # list of full names (the Tinker API's checkpoints) equals the leaf names selecting the same
    # layers.
    if isinstance(saved_targets, (list, str)) and _selected(model, saved_targets) != _selected(
        model, targets
    ):
        shown = saved_targets if isinstance(saved_targets, str) else sorted(saved_targets)
        raise ConfigError(
            f"{where} was trained with targets={shown!r} but adapter.targets "
            f"resolves to {sorted(targets)}: the adapter must have the same shape to load its weights"
        )
    tensors = load_file(str(Path(folder) / "adapter_model.safetensors"), device="cpu")
    # The tensors an adapter folder holds (tunesmith.run.save_final, the Tinker API's store):
    # base embedding weights only when an embedding is a target, never for the LM head alone,
    # where PEFT's "auto" would expect lm_head.base_layer too.
    embeddings = "auto" if any("embed" in t for t in targets) else False
    state = get_peft_model_state_dict(model, save_embedding_layers=embeddings)
    expected = {k: tuple(v.shape) for k, v in state.items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != got:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        reshaped = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
        raise ConfigError(
            f"{where} does not fit this model's adapter: missing {missing[:3]}, "
            f"unexpected {extra[:3]}, other shapes {reshaped[:3]}"
        )
    result = set_peft_model_state_dict(model, tensors)
    if getattr(result, "unexpected_keys", None):
        raise ConfigError(f"{where}: tensors not loaded: {result.unexpected_keys[:3]}")


def _selected(model: nn.Module, targets: list[str] | str) -> set[str]:
    """Names of the modules of ``model`` (a PEFT model: its base model's names) that PEFT's
    ``target_modules`` select: a string is a regex the whole name must match; a list holds
    names that equal the module's name or end it after a ``.``."""
    import re

    names = [name for name, _ in model.get_base_model().named_modules()]
    if isinstance(targets, str):
        return {name for name in names if re.fullmatch(targets, name)}
    exact, suffixes = set(targets), tuple("." + t for t in targets)
    return {name for name in names if name in exact or name.endswith(suffixes)}


REFERENCE_ADAPTER = "reference"


def load_reference_adapter(model: nn.Module, folder: str) -> None:
    """Load the adapter in ``folder`` a second time, frozen, as PEFT adapter ``reference``: the
    reference policy of on-policy methods started from it (``adapter.init_from``), which the
    adapter-disabled base is not. Costs one adapter's memory, not a model copy. Skipped on a
    ``meta``-device model (shape-only copies)."""
    if any(p.is_meta for p in model.parameters()):
        return
    check_adapter_dir(folder)
    model.load_adapter(folder, adapter_name=REFERENCE_ADAPTER, is_trainable=False)


@contextlib.contextmanager
def reference_policy(model: nn.Module):
    """Run ``model`` as the reference: the frozen ``reference`` adapter when one is loaded
    (:func:`load_reference_adapter`), else the base with adapters disabled. Use under no_grad:
    PEFT's ``set_adapter`` moves ``requires_grad`` to the active adapter, so the trained adapter
    is made active (and trainable) again on exit."""
    if REFERENCE_ADAPTER not in getattr(model, "peft_config", {}):
        with model.disable_adapter():
            yield
        return
    trained = model.active_adapter
    model.set_adapter(REFERENCE_ADAPTER)
    try:
        yield
    finally:
        model.set_adapter(trained)


def is_sequence_classifier(model: nn.Module) -> bool:
    """True for a transformers ``*ForSequenceClassification`` model (a reward model)."""
    return type(unwrap(model)).__name__.endswith("ForSequenceClassification")


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts (tied weights counted once)."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        # A 4-bit weight packs two values per byte; count the weights, not the bytes.
        state = getattr(p, "quant_state", None)
        n = int(torch.Size(state.shape).numel()) if state is not None else p.numel()
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers ``*ForCausalLM`` module inside a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Name -> tensor of the trainable parameters only (what a checkpoint must restore)."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
