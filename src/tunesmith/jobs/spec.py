"""The create-job request: validation against OpenAI's ranges, and ``"auto"`` resolution.

OpenAI's ranges (../shared spec §1.4): ``n_epochs`` "auto" or 1..50, ``batch_size`` "auto" or
1..256, DPO ``beta`` "auto" or (0, 2]; ``suffix`` 1..64 characters, ``seed`` 0..2147483647,
``metadata`` at most 16 pairs with keys of at most 64 and values of at most 512 characters. A
violation raises :class:`~.errors.APIError` (400, ``invalid_request_error``, ``param`` naming the
field) before a job exists, so no job can fail later over a number the client sent.

``learning_rate_multiplier``: OpenAI says only "> 0"; here it is bounded to
[:data:`LR_MULTIPLIER_MIN`, :data:`LR_MULTIPLIER_MAX`] = [1e-9, 100]. The learning rate is the
multiplier times the adapter's base rate (2e-4 LoRA, 2e-5 full), so the bounds give 2e-13 .. 2e-2
(LoRA) and 2e-14 .. 2e-3 (full): past 100 no AdamW fine-tune converges (1e-2 is already the edge
for LoRA), and 1e308 was once accepted and then failed the job in training as ``server_error``
(1e308 × 2e-4 = 2e304 is inf as soon as it is a float32); below 1e-9 the weights would not move,
and 5e-324 × 2e-4 is 0.0. Every number is checked finite (a JSON integer of 400 digits is not a
float).

"auto" resolves by tunesmith's documented rule (:mod:`tunesmith.config.auto`): n_epochs by
OpenAI's cookbook heuristic (3 epochs, at least 100 and at most 25 000 examples seen), batch
size ~0.2 % of the examples (power of two, at most 32), learning-rate multiplier 1.0 (the base
learning rate is ``auto_lr`` of the adapter: 2e-4 for LoRA), DPO beta 0.1 (the DPO paper's
default).
"""

from __future__ import annotations

import copy
import math
from typing import Any

from ..config.auto import auto_batch_size, auto_epochs, auto_lr
from ..serve.protocol import APIError
from . import ids

HYPER_KEYS = ("batch_size", "learning_rate_multiplier", "n_epochs")
DPO_KEYS = HYPER_KEYS + ("beta",)
METHOD_TYPES = ("supervised", "dpo", "reinforcement")
AUTO_LR_MULTIPLIER = 1.0
AUTO_BETA = 0.1
SEED_MAX = 2147483647
LR_MULTIPLIER_MIN = 1e-9
LR_MULTIPLIER_MAX = 100.0


def _bad(message: str, param: str | None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    """A JSON number that is a finite float (an integer of hundreds of digits is not one)."""
    if _is_int(value):
        return abs(value) <= 2**1023  # beyond, float(value) overflows
    return isinstance(value, float) and math.isfinite(value)


# key -> (accepts the value, the rule stated in the 400); every number is bounded at both ends
_RULES = {
    "n_epochs": (lambda v: _is_int(v) and 1 <= v <= 50, "an integer between 1 and 50"),
    "batch_size": (lambda v: _is_int(v) and 1 <= v <= 256, "an integer between 1 and 256"),
    "learning_rate_multiplier": (
        lambda v: _is_real(v) and LR_MULTIPLIER_MIN <= v <= LR_MULTIPLIER_MAX,
        f"a number between {LR_MULTIPLIER_MIN:g} and {LR_MULTIPLIER_MAX:g} (the "
        "learning rate is this times the server's base learning rate)",
    ),
    "beta": (lambda v: _is_real(v) and 0 < v <= 2, "a number in (0, 2]"),
    # reinforcement (jobs/rft.py says how each maps onto GRPO)
    "compute_multiplier": (lambda v: _is_real(v) and 0 < v <= 8, "a number in (0, 8]"),
    "eval_interval": (lambda v: _is_int(v) and 1 <= v <= 1_000_000, "an integer between 1 and 1000000"),
    "eval_samples": (lambda v: _is_int(v) and 1 <= v <= 1000, "an integer between 1 and 1000"),
}


def _check_hyper(h: Any, keys: tuple[str, ...], where: str, extra: tuple[str, ...] = ()) -> dict:
    """``h`` with every key of ``keys`` present ("auto" when absent); keys in ``extra`` are
    allowed but left to the caller (not filled, not checked)."""
    if h is None:
        h = {}
    if not isinstance(h, dict):
        raise _bad(f"{where} must be an object", where)
    unknown = sorted(set(h) - set(keys) - set(extra))
    if unknown:
        raise _bad(
            f"Unknown hyperparameter '{unknown[0][:100]}' in {where}; allowed: {', '.join(keys + extra)}",
            f"{where}.{unknown[0][:100]}",
        )
    out = {}
    for key in keys:
        v = h.get(key, "auto")
        if v is None or v == "auto":
            out[key] = "auto"
            continue
        accepts, rule = _RULES[key]
        if not accepts(v):
            raise _bad(f"Invalid {key}: {_shown(v)}. It must be 'auto' or {rule}.", f"{where}.{key}")
        out[key] = v
    return out


def _shown(value: Any) -> str:
    """``repr`` of a rejected value, cut short (it may be a 4,000-digit integer or a long string)."""
    text = repr(value) if not _is_int(value) or abs(value) < 10**30 else f"{str(value)[:20]}…"
    return text if len(text) <= 80 else text[:80] + "…"


def check_metadata(metadata: Any) -> dict | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise _bad("metadata must be an object of string keys and string values", "metadata")
    if len(metadata) > 16:
        raise _bad(f"Invalid metadata: {len(metadata)} pairs; at most 16 are allowed.", "metadata")
    for k, v in metadata.items():
        if len(k) > 64:
            raise _bad(f"Invalid metadata: key '{k[:20]}…' is longer than 64 characters.", "metadata")
        if not isinstance(v, str):
            raise _bad(f"Invalid metadata: the value of '{k}' must be a string.", "metadata")
        if len(v) > 512:
            raise _bad(f"Invalid metadata: the value of '{k}' is longer than 512 characters.", "metadata")
    return dict(metadata)


def normalise_create(body: Any) -> dict:
    """Validate a create-job body; returns ``{model, training_file, validation_file, suffix,
    seed, metadata, integrations, method}`` with ``method`` in OpenAI's echoed shape."""
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object", None)
    for key in ("model", "training_file"):
        if not isinstance(body.get(key), str) or not body.get(key):
            raise _bad(f"Missing required parameter: '{key}'.", key, "missing_required_parameter")
    known = {
        "model",
        "training_file",
        "validation_file",
        "suffix",
        "seed",
        "metadata",
        "integrations",
        "hyperparameters",
        "method",
    }
    unknown = sorted(set(body) - known)
    if unknown:
        raise _bad(f"Unrecognized request argument supplied: {unknown[0]}", unknown[0])
    validation = body.get("validation_file")
    if validation is not None and not isinstance(validation, str):
        raise _bad("validation_file must be a file id", "validation_file")
    suffix = body.get("suffix")
    if suffix is not None:
        if not isinstance(suffix, str) or not 1 <= len(suffix) <= 64:
            raise _bad("Invalid suffix: it must be between 1 and 64 characters long.", "suffix")
        if not ids.is_valid_suffix(suffix):
            raise _bad("Invalid suffix: only letters, digits, '-' and '_' are allowed.", "suffix")
    seed = body.get("seed")
    if seed is not None and not (
        isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= SEED_MAX
    ):
        raise _bad(f"Invalid seed: {seed!r}. It must be an integer between 0 and {SEED_MAX}.", "seed")
    integrations = body.get("integrations")
    if integrations:
        # W&B needs network access the service does not have; refuse rather than ignore.
        raise _bad("integrations are not supported by this server", "integrations")
    method = _normalise_method(body.get("method"), body.get("hyperparameters"))
    return {
        "model": body["model"],
        "training_file": body["training_file"],
        "validation_file": validation,
        "suffix": suffix,
        "seed": seed,
        "metadata": check_metadata(body.get("metadata")),
        "integrations": [],
        "method": method,
    }


def _normalise_method(method: Any, legacy: Any) -> dict:
    if method is None:
        # The deprecated top-level hyperparameters map onto the supervised method.
        return {
            "type": "supervised",
            "supervised": {"hyperparameters": _check_hyper(legacy, HYPER_KEYS, "hyperparameters")},
        }
    if not isinstance(method, dict):
        raise _bad("method must be an object", "method")
    kind = method.get("type")
    if not isinstance(kind, str) or kind not in METHOD_TYPES:
        raise _bad(f"Invalid method.type: {kind!r}. Supported: {', '.join(METHOD_TYPES)}.", "method.type")
    extra = sorted(set(method) - {"type", kind})
    if extra:
        raise _bad(f"method.{extra[0]} does not match method.type '{kind}'", f"method.{extra[0]}")
    if kind == "reinforcement":
        from .rft import check_section

        if legacy is not None:
            raise _bad("The top-level hyperparameters are for the supervised method only", "hyperparameters")
        return {"type": kind, kind: check_section(method.get(kind))}
    section = method.get(kind) or {}
    if not isinstance(section, dict) or set(section) - {"hyperparameters"}:
        raise _bad(f"method.{kind} must be an object with 'hyperparameters'", f"method.{kind}")
    keys = DPO_KEYS if kind == "dpo" else HYPER_KEYS
    hyper = _check_hyper(section.get("hyperparameters"), keys, f"method.{kind}.hyperparameters")
    if legacy is not None:
        if kind != "supervised":
            raise _bad("The top-level hyperparameters are for the supervised method only", "hyperparameters")
        for k, v in _check_hyper(legacy, HYPER_KEYS, "hyperparameters").items():
            if hyper[k] == "auto":
                hyper[k] = v
    return {"type": kind, kind: {"hyperparameters": hyper}}


def resolve_method(method: dict, n_examples: int) -> dict:
    """``method`` with every ``"auto"`` replaced by the number the run will use."""
    if method["type"] == "reinforcement":
        from .rft import resolve

        return resolve(method, n_examples)
    out = copy.deepcopy(method)
    h = out[out["type"]]["hyperparameters"]
    if h.get("n_epochs") == "auto":
        h["n_epochs"] = auto_epochs(n_examples)
    if h.get("batch_size") == "auto":
        h["batch_size"] = auto_batch_size(n_examples)
    if h.get("learning_rate_multiplier") == "auto":
        h["learning_rate_multiplier"] = AUTO_LR_MULTIPLIER
    if h.get("beta") == "auto":
        h["beta"] = AUTO_BETA
    return out


def hyperparameters(method: dict) -> dict:
    """The job's top-level ``hyperparameters`` (the three shared keys of the method's block)."""
    h = method[method["type"]]["hyperparameters"]
    return {k: h[k] for k in HYPER_KEYS}


def base_lr(adapter_type: str) -> float:
    return auto_lr(adapter_type)


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    return max(1, math.ceil(n_examples / batch_size))
