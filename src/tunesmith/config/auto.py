"""Resolve ``auto`` hyperparameters from the dataset and the adapter, by a documented rule.

- ``epochs: auto`` — OpenAI's published heuristic: target 3 epochs, but keep the number of
  examples seen within [100, 25 000]: with n examples, ``epochs = min(25, 100 // n)`` when
  ``3n < 100``, ``max(1, 25 000 // n)`` when ``3n > 25 000``, else 3.
- ``batch_size: auto`` — about 0.2 % of the examples, clamped to [1, 32], rounded down to a power
  of two (n = 971 -> 1; 4 000 -> 8; 20 000 -> 32).
- ``lr: auto`` — 2e-4 for LoRA / DoRA adapters, 2e-5 for full fine-tuning (the usual
  starting points for AdamW at these batch sizes).
"""

from __future__ import annotations

TARGET_EPOCHS, MIN_EXAMPLES_SEEN, MAX_EXAMPLES_SEEN, MAX_EPOCHS = 3, 100, 25_000, 25


def auto_epochs(n_examples: int) -> int:
    n = max(1, n_examples)
    if n * TARGET_EPOCHS < MIN_EXAMPLES_SEEN:
        return min(MAX_EPOCHS, MIN_EXAMPLES_SEEN // n)
    if n * TARGET_EPOCHS > MAX_EXAMPLES_SEEN:
        return max(1, MAX_EXAMPLES_SEEN // n)
    return TARGET_EPOCHS


def auto_batch_size(n_examples: int) -> int:
    target = min(32, max(1, int(0.002 * n_examples)))
    return 1 << (target.bit_length() - 1)


def auto_lr(adapter_type: str) -> float:
    return 2e-5 if adapter_type == "none" else 2e-4


def auto_values(train_cfg, adapter_type: str, n_examples: int) -> dict:
    """The values chosen for the ``"auto"`` ones among ``train_cfg.epochs / batch_size / lr``
    (``{}`` when none is auto); :func:`tunesmith.config.resolve.resolve` puts them in place."""
    chosen = {}
    if train_cfg.epochs == "auto":
        chosen["epochs"] = float(auto_epochs(n_examples))
    if train_cfg.batch_size == "auto":
        chosen["batch_size"] = auto_batch_size(n_examples)
    if train_cfg.lr == "auto":
        chosen["lr"] = auto_lr(adapter_type)
    return chosen
