"""PEFT LoRA adapters of the Tinker API's models on one shared base, and their Adam state.

Tinker's ``LoraConfig`` -> PEFT: ``r = rank``, ``lora_alpha`` :data:`LORA_ALPHA` (Tinker's
fixed alpha), no dropout, targets chosen by the switches ``train_attn`` (the attention
projections), ``train_mlp`` (the MLP projections) and ``train_unembed`` (the LM head), written
as a regex of the exact module names of the bare model — it selects those layers and nothing
PEFT adds inside them (``base_layer``, other adapters' ``lora_A`` / ``lora_B``) — and saved as
is into ``adapter_config.json``. Every adapter of a base lives in one PEFT model (multi-adapter);
parameters are addressed by their PEFT state-dict key with the adapter name removed, the keys
of ``adapter_model.safetensors``.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..errors import DataError, ModelError

LORA_ALPHA = 32
_ATTN_PARENTS = ("self_attn", "attention", "attn", "self_attention")
_MLP_PARENTS = ("mlp", "feed_forward", "ffn")


def lora_targets(model: nn.Module, *, attn: bool, mlp: bool, unembed: bool) -> list[str]:
    """Full module names of the linear layers a Tinker ``LoraConfig`` adapts (sorted)."""
    head = model.get_output_embeddings()
    out = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if module is head:
            if unembed:
                out.append(name)
            continue
        parents = name.split(".")[:-1]
        if (attn and any(p in _ATTN_PARENTS for p in parents)) or (
            mlp and any(p in _MLP_PARENTS for p in parents)
        ):
            out.append(name)
    return sorted(out)


def all_targets(model: nn.Module) -> dict[tuple[bool, bool, bool], list[str]]:
    """``(train_attn, train_mlp, train_unembed)`` -> :func:`lora_targets`, for every switch
    setting; call it on the bare model (PEFT adds linears of its own once an adapter exists)."""
    flags = (False, True)
    return {
        (a, m, u): lora_targets(model, attn=a, mlp=m, unembed=u) for a in flags for m in flags for u in flags
    }


def lora_config(targets: list[str], rank: int, base_name: str):
    """The PEFT ``LoraConfig`` of a Tinker model adapting ``targets`` (module docstring)."""
    from ..models.quantize import import_peft

    import_peft()
    from peft import LoraConfig

    from ..models.lora_linear import register_fused

    if not targets:
        raise DataError(
            "lora_config: train_attn, train_mlp and train_unembed are all false; nothing to train"
        )
    cfg = LoraConfig(
        r=int(rank),
        lora_alpha=LORA_ALPHA,
        lora_dropout=0.0,
        target_modules="|".join(re.escape(t) for t in targets),
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_name,
    )
    register_fused(cfg)
    return cfg


def add_adapter(
    peft: nn.Module | None, hf: nn.Module, name: str, cfg, seed: int | None, device: torch.device
) -> nn.Module:
    """Add adapter ``name`` to ``peft`` (or wrap ``hf`` in a PEFT model with it); ``seed`` seeds
    its initialisation from a private RNG (None: a seed drawn from the global torch RNG, so a
    server seeded at start is reproducible). Returns the PEFT model."""
    from ..models.load import MODEL_INIT_LOCK
    from ..models.quantize import import_peft

    import_peft()
    from peft import get_peft_model

    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)))
    with MODEL_INIT_LOCK, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(int(seed))
        if peft is None:
            peft = get_peft_model(hf, cfg, adapter_name=name)
        else:
            peft.add_adapter(name, cfg)
    return peft.to(device)


def adapter_params(peft: nn.Module, name: str) -> dict[str, nn.Parameter]:
    """PEFT state-dict key (adapter name removed) -> parameter, for adapter ``name``."""
    marker = f".{name}."
    return {key.replace(marker, "."): p for key, p in peft.named_parameters() if marker in key}


def copy_into(params: dict[str, nn.Parameter], tensors: dict[str, torch.Tensor], where: str) -> None:
    """Copy a PEFT adapter's tensors into an adapter's parameters (same keys and shapes)."""
    from ..engine.checkpoint import copy_checked

    copy_checked(params, tensors, where, DataError)


def optimizer_tensors(
    optimizer: torch.optim.Optimizer, params: dict[str, nn.Parameter]
) -> dict[str, torch.Tensor]:
    """Adam's state as flat tensors: ``<key>.exp_avg``, ``<key>.exp_avg_sq``, ``<key>.step``."""
    out = {}
    for key, p in params.items():
        state = optimizer.state.get(p)
        if not state:
            continue
        for name in ("exp_avg", "exp_avg_sq", "step"):
            out[f"{key}.{name}"] = (
                torch.as_tensor(state[name])
                .detach()
                .to("cpu", copy=True)
                .reshape(state[name].shape if hasattr(state[name], "shape") else ())
                .contiguous()
            )
    return out


def load_optimizer(
    optimizer: torch.optim.Optimizer,
    params: dict[str, nn.Parameter],
    tensors: dict[str, torch.Tensor],
    where: str,
) -> None:
    optimizer.state.clear()
    for key, p in params.items():
        if f"{key}.exp_avg" not in tensors:
            continue
        try:
            state = {
                "step": tensors[f"{key}.step"].to(torch.float32),
                "exp_avg": tensors[f"{key}.exp_avg"].to(p.device, p.dtype),
                "exp_avg_sq": tensors[f"{key}.exp_avg_sq"].to(p.device, p.dtype),
            }
        except KeyError as exc:
            raise ModelError(f"{where}: optimizer state is incomplete ({exc})") from None
        if state["exp_avg"].shape != p.shape:
            raise ModelError(f"{where}: optimizer state of {key} has the wrong shape")
        optimizer.state[p] = state
