"""Pure loss functions over tensors, each returning ``(loss, metrics)``."""

from .token_ce import linear_cross_entropy

__all__ = ["linear_cross_entropy"]
