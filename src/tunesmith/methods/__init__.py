"""Training methods: each prepares its data and turns a batch into ``(loss_sum, metrics)``.

See :mod:`tunesmith.methods.common` for the protocol a method module follows.
"""

from __future__ import annotations

import importlib

# config ``method:`` value -> module in this package
METHODS = {"sft": "sft", "pretrain": "sft", "grpo": "grpo"}
METHODS.update(dpo="preference", kto="kto", reward="reward")
METHODS["distill"] = "distill"


def get_method(name: str):
    """The module implementing ``method: name``."""
    try:
        module = METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}") from None
    return importlib.import_module(f"{__name__}.{module}")
