"""Training methods: each prepares its data and turns a batch into ``(loss_sum, metrics)``.

Which methods exist, and what each declares (data formats, config sections, losses, whether it
needs a reference model), is :mod:`tunesmith.config.registry`; this package holds their
implementations. See :mod:`tunesmith.methods.common` for the protocol a method module follows.
"""

from __future__ import annotations

import importlib

from ..config import RunConfig
from ..config import validate as validate_sections
from ..config.registry import method_spec


def get_method(name: str):
    """The module implementing ``method: name`` (``ValueError`` for an unknown method): the
    ``module`` its spec in :data:`METHODS` names."""
    return importlib.import_module(f"{__name__}.{method_spec(name).module}")


def validate(config: RunConfig) -> None:
    """Every check of a run config: :func:`tunesmith.config.validate` (torch-free), then the
    method module's own ``validate_config(config)`` where it has one — checks that import more
    than the config layer may (GRPO parses its graders and finds their judges)."""
    validate_sections(config)
    check = getattr(get_method(config.method), "validate_config", None)
    if check is not None:
        check(config)


__all__ = ["get_method", "validate"]
