"""Reward functions for online RL (``method: grpo``) and their weighted sum.

A reward function scores a list of :class:`Sample` (prompt, completion, the example's extra
fields) and returns one float per sample. ``grpo.rewards`` in the config lists them
(:class:`tunesmith.config.schema.GrpoRewardConfig`); :func:`build_rewards` turns that list into
a :class:`RewardSet` whose :meth:`RewardSet.score` returns the weighted sum and every
function's own scores (logged per step as ``reward_<name>``).

Built-ins live in :mod:`.builtin` (exact match, regex, JSON schema, length); the operator's
own Python callables and trained reward models in :mod:`.external`; OpenAI graders
(``type: grader``) in :mod:`.grader`. Reward specs come only from the operator's config file,
never from the training data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, TunesmithError


@dataclass
class Sample:
    """One completion to score.

    ``prompt`` is the example's prompt as written in the data (a string or a message list),
    ``completion`` the decoded completion (special tokens removed, stripped), ``n_tokens`` the
    number of sampled tokens (the end-of-turn token included), ``extra`` the example's other
    fields (e.g. a reference ``answer``).
    """

    prompt: Any
    completion: str
    n_tokens: int
    extra: dict = field(default_factory=dict)


ScoreFn = Callable[[list[Sample]], list[float]]


@dataclass
class RewardFunction:
    """A named, weighted scorer."""

    name: str
    weight: float
    score: ScoreFn


class RewardSet:
    """The weighted sum of several reward functions."""

    def __init__(self, functions: list[RewardFunction]):
        if not functions:
            raise ConfigError("config: 'grpo.rewards' is empty; give at least one reward function")
        self.functions = functions

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.functions]

    def score(self, samples: list[Sample]) -> tuple[list[float], dict[str, list[float]]]:
        """``(total, per_function)``: ``total[i] = Σ_f weight_f · score_f(samples)[i]``.

        A function whose scores carry ``errors`` (a grader reward: per completion, whether it
        failed to grade and scored 0) also adds ``<name>_errors`` (1.0 where it failed) to
        ``per_function``, logged as ``reward_<name>_errors``; it is not part of the total.
        """
        per_function = {}
        total = [0.0] * len(samples)
        for fn in self.functions:
            raw = fn.score(samples)
            values = _checked(fn.name, raw, len(samples))
            per_function[fn.name] = values
            errors = getattr(raw, "errors", None)
            if errors is not None:
                per_function[f"{fn.name}_errors"] = [float(bool(e)) for e in errors]
            total = [t + fn.weight * v for t, v in zip(total, values)]
        return total, per_function


def _checked(name: str, values, n: int) -> list[float]:
    values = list(values)
    if len(values) != n:
        raise TunesmithError(f"reward function '{name}' returned {len(values)} scores for {n} completions")
    out = []
    for v in values:
        if isinstance(v, bool):
            v = float(v)
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise TunesmithError(f"reward function '{name}' returned {v!r}; rewards must be finite numbers")
        out.append(float(v))
    return out


def build_rewards(specs: list, *, max_new_tokens: int, device=None, dtype: str = "auto") -> RewardSet:
    """A :class:`RewardSet` from ``grpo.rewards`` (a list of ``GrpoRewardConfig``).

    ``device`` and ``dtype`` (``train.dtype``) are where and how reward and judge models load.
    Raises :class:`ConfigError` for a spec that cannot work (a pattern that does not compile,
    a schema that is not a JSON schema, a function that cannot be imported …), naming
    ``grpo.rewards[i]``.
    """
    from . import builtin, external, grader

    makers = {
        "exact_match": builtin.exact_match,
        "regex": builtin.regex,
        "json_schema": builtin.json_schema,
        "length": builtin.length,
        "python": external.python_function,
        "reward_model": external.reward_model,
        "grader": grader.grader_reward,
    }
    functions, seen = [], {}
    for i, spec in enumerate(specs):
        where = f"grpo.rewards[{i}]"
        if spec.type not in makers:
            raise ConfigError(f"config: '{where}.type' = {spec.type!r} is not one of {', '.join(makers)}")
        _check_unused_keys(spec, where)
        kwargs = {"max_new_tokens": max_new_tokens} if spec.type == "length" else {}
        if spec.type == "reward_model":
            kwargs = {"device": device}
        if spec.type == "grader":
            kwargs = {"device": device, "dtype": dtype}
        score = makers[spec.type](spec, where, **kwargs)
        name = spec.name or getattr(score, "default_name", None) or _default_name(spec)
        if not spec.name:
            seen[name] = seen.get(name, 0) + 1
            name = name if seen[name] == 1 else f"{name}_{seen[name]}"
        if name == "std":  # the metric reward_std is the within-group spread of the total
            raise ConfigError(f"config: '{where}.name' 'std' is reserved; choose another name")
        if name in [f.name for f in functions]:
            raise ConfigError(f"config: '{where}.name' {name!r} is used twice; names must be unique")
        functions.append(RewardFunction(name, spec.weight, score))
    return RewardSet(functions)


def _default_name(spec) -> str:
    """The type, or for a Python reward its function's name (``rewards.py:format_ok`` -> format_ok)."""
    if spec.type == "python" and spec.function:
        return spec.function.rpartition(":")[2] or spec.type
    return spec.type


def required_fields(specs: list) -> dict[str, str]:
    """Example fields the built-in rewards and graders' templates in ``specs`` read ->
    ``grpo.rewards[i] (name)``, so data can be checked line by line before any model or code
    is loaded."""
    from .grader import required_item_keys

    out = {}
    for i, spec in enumerate(specs):
        if spec.type == "exact_match":
            keys = [spec.field or "answer"]
        elif spec.type == "json_schema":
            keys = [spec.field]
        elif spec.type == "grader":
            keys = sorted(required_item_keys(spec, f"grpo.rewards[{i}]"))
        else:
            keys = []
        for key in keys:
            if key:
                out.setdefault(key, f"grpo.rewards[{i}] ({spec.name or spec.type})")
    return out


# Which optional keys each type reads (everything else must stay at its default, so a typo'd
# combination such as `pattern` on a json_schema reward fails instead of being ignored).
_KEYS = {
    "exact_match": {"field", "pattern", "ignore_case"},
    "regex": {"pattern", "full_match", "ignore_case"},
    "json_schema": {"schema", "field"},
    "length": {"max_tokens", "cache_tokens"},
    "python": {"function"},
    "reward_model": {"model"},
    "grader": {"grader", "judge_model"},
}
_DEFAULTS = {
    "field": None,
    "pattern": None,
    "full_match": False,
    "ignore_case": False,
    "schema": None,
    "function": None,
    "model": None,
    "max_tokens": None,
    "cache_tokens": None,
    "grader": None,
    "judge_model": None,
}


def _check_unused_keys(spec, where: str) -> None:
    for key, default in _DEFAULTS.items():
        if key not in _KEYS[spec.type] and getattr(spec, key) != default:
            raise ConfigError(
                f"config: '{where}.{key}' does not apply to a {spec.type} reward "
                f"(it reads: {', '.join(sorted(_KEYS[spec.type])) or 'nothing'})"
            )


__all__ = ["Sample", "RewardFunction", "RewardSet", "build_rewards", "required_fields"]
