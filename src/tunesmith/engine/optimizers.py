"""The optimizer named by ``train.optimizer``.

- ``adamw``: ``torch.optim.AdamW`` (decoupled weight decay, Loshchilov & Hutter 2019).
- ``adamw_8bit``: bitsandbytes' AdamW with block-wise 8-bit moments (Dettmers et al. 2022,
  "8-bit Optimizers via Block-wise Quantization"): 2 bytes of state per parameter instead of 8;
  runs on CPU (bitsandbytes' CPU kernels) and CUDA.
- ``paged_adamw_8bit``: the same with its state in CUDA unified memory, paged to host memory
  when the GPU runs short (the "paged optimizers" of QLoRA, Dettmers et al. 2023, §3). CUDA only:
  bitsandbytes would silently fall back to unpaged state on CPU, so that is an error here.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError


def make_optimizer(groups: list[dict], cfg, device: torch.device) -> torch.optim.Optimizer:
    """Build ``cfg.optimizer`` over parameter ``groups`` (each with its own weight decay)."""
    name = getattr(cfg, "optimizer", "adamw")
    kwargs = dict(lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)
    if name == "adamw":
        return torch.optim.AdamW(groups, **kwargs)
    if name == "paged_adamw_8bit" and torch.device(device).type != "cuda":
        raise ConfigError(
            "config: 'train.optimizer: paged_adamw_8bit' pages optimizer state through "
            f"CUDA unified memory and needs a GPU (this run is on {torch.device(device).type}); "
            "use 'adamw_8bit' or 'adamw'"
        )
    from ..models.quantize import require_bitsandbytes

    bnb = require_bitsandbytes()
    cls = {"adamw_8bit": bnb.optim.AdamW8bit, "paged_adamw_8bit": bnb.optim.PagedAdamW8bit}.get(name)
    if cls is None:
        raise ConfigError(f"config: unknown train.optimizer {name!r}")
    return cls(groups, **kwargs)
