"""Learning-rate schedules as multipliers of the peak lr, for ``torch.optim.lr_scheduler.LambdaLR``."""

from __future__ import annotations

import math


def lr_multiplier(step: int, *, total: int, warmup: int, kind: str, min_ratio: float = 0.0) -> float:
    """Multiplier for the update of 0-based optimizer step ``step``.

    Linear warm-up from 1/warmup to 1 over ``warmup`` steps, then ``constant``, ``linear`` or
    ``cosine`` decay to ``min_ratio`` at the last step.
    """
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    if kind == "linear":
        decay = 1.0 - progress
    else:
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * decay
