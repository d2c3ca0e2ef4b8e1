"""The contract between the engine and a training method (see :mod:`tunesmith.methods`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


def _default_item_tokens(item) -> int:
    return len(item.input_ids)


def mean_per_unit(sums: dict, n: int) -> dict:
    """Default metric summary: every summed metric divided by the window's normaliser ``n``;
    ``correct`` is reported as ``accuracy``."""
    out = {}
    for key, value in sums.items():
        out["accuracy" if key == "correct" else key] = value / max(n, 1)
    return out


@dataclass
class MethodParts:
    """What the engine needs from a method.

    ``loss_fn(model, batch) -> (loss_sum, metrics)``: the *sum* of the per-unit losses of the
    batch (a 0-d tensor with grad) and a dict of summed metrics (numbers or 0-d tensors);
    ``batch_count(batch)`` is the number of units summed (tokens for SFT, pairs for DPO …), the
    engine's normaliser; ``summarize(sums, n)`` turns summed metrics into logged values.
    """

    loss_fn: Callable
    collate: Callable
    batch_count: Callable
    item_tokens: Callable = _default_item_tokens
    summarize: Callable[[dict, int], dict] = mean_per_unit
    perplexity: bool = True
    """Log ``eval_ppl = exp(eval_loss)`` (only meaningful for token cross-entropy)."""
    batch_reuse: int = 1
    """Optimizer steps fed the same data window: step ``s`` gets the window of data step
    ``s // batch_reuse`` (GRPO's μ, re-using each rollout for several updates). 1 for every
    offline method."""
    extra: dict = field(default_factory=dict)
