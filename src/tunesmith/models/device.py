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
    """auto -> bf16 on CUDA devices that support it, else fp32 (bf16 is ~1.5x slower on CPUs without AMX)."""
    if name != "auto":
        return name
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"
