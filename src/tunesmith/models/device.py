"""Which device and precision a run uses: named in the config, resolved here for this machine.

Below the engine (models, graders and eval resolve devices too); the engine's ``runtime`` owns what
happens on the device (autocast, seeding, RNG state).
"""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from ..errors import ConfigError

        raise ConfigError("config: train.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> str:
    """auto -> bf16 on CUDA devices that support it, else fp32 (half precision is many times slower
    on CPUs without AMX: see tunesmith.run.ignored_option_warnings)."""
    if name != "auto":
        return name
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_amx_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices with AMX (Intel Sapphire Rapids and later): there
    bf16 GEMMs run several times faster than fp32 (measured 4.9x on a 2-core Xeon slice), where
    CPUs without it run them many times slower. Read from Linux's CPU flags; False elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """Autocast's dtype for ``x``'s device when autocast is on there, else None (also on the
    meta device, where the memory estimator traces: it has no autocast)."""
    device_type = x.device.type
    if device_type == "meta" or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def frozen_base_dtype(adapter_type: str, run_dtype: str, quantized: bool = False) -> torch.dtype:
    """The dtype a base model is loaded in for training.

    With an adapter (LoRA / DoRA) under bf16 / fp16 autocast the base is frozen and autocast
    casts every linear weight to the half type at each use anyway: storing it so halves the
    weights' memory, removes a cast per layer per pass, and gives the matmuls the same inputs
    (:func:`keep_fp32_outside_linears` puts norms, embeddings and the head back in fp32, so the
    residual stream and the loss stay fp32 as before). Full fine-tuning keeps fp32 weights (the
    optimizer updates them); quantised and fp32 runs load fp32.
    """
    if adapter_type in ("lora", "dora") and run_dtype in HALF and not quantized:
        return HALF[run_dtype]
    return torch.float32


def keep_fp32_outside_linears(model: torch.nn.Module) -> int:
    """Cast every parameter and buffer that is not a decoder linear layer's weight or bias back to
    fp32 (norms, embeddings, the LM head, rotary buffers); returns how many parameters moved.

    Used after loading the base in half precision (:func:`frozen_base_dtype`): from a bf16 /
    fp16 checkpoint the upcast is exact, so those parts hold exactly what an fp32 load holds."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    linear_params = {
        id(p)
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and m is not head
        for p in m.parameters(recurse=False)
    }
    moved = 0
    for p in model.parameters():
        if id(p) not in linear_params and p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()
            moved += 1
    for m in model.modules():
        for name, b in list(m.named_buffers(recurse=False)):
            if b is not None and b.is_floating_point() and b.dtype != torch.float32:
                setattr(m, name, b.float())
    return moved
