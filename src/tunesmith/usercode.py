"""Loading an operator's own Python function named as ``package.module:function`` or
``path/to/file.py:function`` (eval scorers, GRPO reward functions). Torch-free.

This runs trusted code the operator named on their own command line or config, in their own
process; untrusted code (OpenAI python graders) goes through :mod:`tunesmith.graders.sandbox`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path


class UserCodeError(ValueError):
    """Why a ``module:function`` reference could not be loaded; the message is a fragment
    (``file not found: x.py``) for the caller to prefix with what the function was for."""


def split_reference(ref: str) -> tuple[str, str] | None:
    """``(module or file, function)`` of ``ref``, or None when it is not ``X:identifier``."""
    module_ref, sep, name = ref.rpartition(":")
    if not sep or not module_ref or not name.isidentifier():
        return None
    return module_ref, name


def load_function(ref: str, *, cwd_on_path: bool = False) -> Callable:
    """The callable ``ref`` names. A ``.py`` file is loaded once per resolved path under a
    private module name (two files both called ``rewards.py`` do not collide); a module is
    imported, with the current directory on ``sys.path`` first when ``cwd_on_path``.
    Raises :class:`UserCodeError` (bad reference, missing file, failed import, no such function)."""
    parts = split_reference(ref)
    if parts is None:
        raise UserCodeError(f"{ref!r} must look like 'package.module:function' or 'path/to/file.py:function'")
    module_ref, name = parts
    try:
        module = (
            _load_file(Path(module_ref)) if module_ref.endswith(".py") else _import(module_ref, cwd_on_path)
        )
    except UserCodeError:
        raise
    except Exception as exc:  # the operator's module failed to import: say which and why
        raise UserCodeError(f"could not load {module_ref}: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise UserCodeError(f"{module_ref} has no function '{name}'")
    return fn


def _load_file(path: Path):
    if not path.is_file():
        raise UserCodeError(f"file not found: {path}")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    mod_name = f"_tunesmith_user_{path.stem}_{digest}"
    module = sys.modules.get(mod_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[mod_name]
            raise
    return module


def _import(module_ref: str, cwd_on_path: bool):
    if cwd_on_path and "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    return importlib.import_module(module_ref)
