"""Reinforcement fine-tuning (``method.type: "reinforcement"``): the request, its ``"auto"``
values and its mapping onto tunesmith's GRPO (``method: grpo``, docs/grpo.md).

The request follows the SDK's ``ReinforcementMethodParam``: ``{"grader": {…}, "hyperparameters":
{n_epochs, batch_size, learning_rate_multiplier, compute_multiplier, eval_interval, eval_samples,
reasoning_effort}}``, each hyperparameter ``"auto"`` or a number (``reasoning_effort`` one of
``default, low, medium, high``). The grader is parsed by :func:`tunesmith.graders.parse_grader`;
a bad one is a 400 whose ``param`` is the field path (``method.reinforcement.grader.operation``).
Whether it can run on this server (judge models, the python sandbox) is checked by
:func:`tunesmith.jobs.rft_graders.check_grader_here`, which needs the server's settings.

The mapping onto GRPO (documented in docs/service.md, "Reinforcement jobs"):

* ``n_epochs``, ``batch_size`` (prompts per step), ``learning_rate_multiplier`` as for supervised
  jobs (same ``"auto"`` rules; lr = the adapter's base rate × multiplier);
* ``compute_multiplier`` m → ``grpo.group_size = clamp(round(8 · m), 2, 64)`` completions per
  prompt ("auto" = 1.0 → 8, GRPO's default): the exploration compute per prompt scales with it;
* ``eval_interval`` → ``train.eval_every`` and ``train.save_every`` (OpenAI checkpoints at each
  validation step); "auto" = once per epoch;
* ``eval_samples`` — each evaluation samples ``group_size`` completions per validation example
  (GRPO has no separate evaluation group size); "auto" resolves to that number, and an explicit
  other value is kept in the job but not applied (the worker says so in a ``warn`` event);
* ``reasoning_effort`` — accepted and echoed; it steers OpenAI's reasoning models and has no
  meaning for the open models trained here.

The reward is the grader (``grpo.rewards[0]: {type: grader, name: grader}``). A multi grader's
sub-graders are added as weight-0 rewards (``grader_1`` …, in the order of ``graders``), so each
one's mean score is logged — OpenAI reports per-grader scores — without changing the reward;
such sub-graders are graded twice per completion.
"""

from __future__ import annotations

import copy
from typing import Any

from ..config.auto import auto_batch_size, auto_epochs
from ..serve.protocol import APIError
from .spec import AUTO_LR_MULTIPLIER, HYPER_KEYS, _check_hyper, steps_per_epoch

RFT_KEYS = HYPER_KEYS + ("compute_multiplier", "eval_interval", "eval_samples")
REASONING_EFFORTS = ("default", "low", "medium", "high")
BASE_GROUP_SIZE = 8  # grpo.group_size at compute_multiplier 1.0 (GRPO's own default)
MIN_GROUP_SIZE, MAX_GROUP_SIZE = 2, 64
MAIN_REWARD = "grader"
WHERE = "method.reinforcement"


def _bad(message: str, param: str | None) -> APIError:
    return APIError(400, message, param=param)


def check_section(section: Any) -> dict:
    """``method.reinforcement`` checked and echoed: ``{"grader": <as sent>, "hyperparameters":
    {every key, "auto" where absent; reasoning_effort "default"}}``; APIError 400 otherwise."""
    if not isinstance(section, dict):
        raise _bad(f"{WHERE} must be an object with 'grader' and 'hyperparameters'", WHERE)
    extra = sorted(set(section) - {"grader", "hyperparameters"})
    if "response_format" in extra:
        raise _bad(
            f"{WHERE}.response_format is not supported: this server has no constrained "
            "decoding in training; ask for the format in the prompt and check it with the grader",
            f"{WHERE}.response_format",
        )
    if extra:
        raise _bad(
            f"Unknown field '{extra[0][:100]}' in {WHERE}; allowed: grader, hyperparameters",
            f"{WHERE}.{extra[0][:100]}",
        )
    if "grader" not in section:
        raise _bad(f"Missing required parameter: '{WHERE}.grader'.", f"{WHERE}.grader")
    parse_grader_param(section["grader"], f"{WHERE}.grader")
    where = f"{WHERE}.hyperparameters"
    raw = section.get("hyperparameters")
    hyper = _check_hyper(raw, RFT_KEYS, where, extra=("reasoning_effort",))
    effort = (raw or {}).get("reasoning_effort", "default")
    if effort not in REASONING_EFFORTS:
        raise _bad(
            f"Invalid reasoning_effort: {str(effort)[:40]!r}. It must be one of "
            f"{', '.join(REASONING_EFFORTS)}.",
            f"{where}.reasoning_effort",
        )
    hyper["reasoning_effort"] = effort
    return {"grader": section["grader"], "hyperparameters": hyper}


def parse_grader_param(obj: Any, path: str):
    """The parsed grader of a request field; a 400 naming the field for any problem. Only a
    grader object is accepted (never a file name: the client cannot name server files)."""
    from ..graders import GraderError, parse_grader

    if not isinstance(obj, dict):
        raise _bad(f"{path} must be a grader object", path)
    try:
        return parse_grader(obj, path)
    except GraderError as exc:
        raise _bad(str(exc), exc.path) from None


def group_size(compute_multiplier: float) -> int:
    """Completions per prompt for a compute multiplier: ``clamp(round(8 · m), 2, 64)``."""
    return max(MIN_GROUP_SIZE, min(MAX_GROUP_SIZE, round(BASE_GROUP_SIZE * compute_multiplier)))


def resolve(method: dict, n_examples: int) -> dict:
    """``method`` (reinforcement) with every ``"auto"`` replaced by what the run uses."""
    out = copy.deepcopy(method)
    h = out["reinforcement"]["hyperparameters"]
    if h["n_epochs"] == "auto":
        h["n_epochs"] = auto_epochs(n_examples)
    if h["batch_size"] == "auto":
        h["batch_size"] = auto_batch_size(n_examples)
    if h["learning_rate_multiplier"] == "auto":
        h["learning_rate_multiplier"] = AUTO_LR_MULTIPLIER
    if h["compute_multiplier"] == "auto":
        h["compute_multiplier"] = 1.0
    if h["eval_interval"] == "auto":
        h["eval_interval"] = steps_per_epoch(n_examples, h["batch_size"])
    if h["eval_samples"] == "auto":
        h["eval_samples"] = group_size(h["compute_multiplier"])
    return out


def reward_graders(grader: dict) -> list[tuple[str, str, str, dict]]:
    """``(reward name, grader name, grader type, grader object)`` of every GRPO reward an RFT
    job's grader becomes: the grader itself (weight 1), then a multi grader's sub-graders
    (weight 0, logged only), named :data:`MAIN_REWARD` and ``grader_1`` …"""
    out = [(MAIN_REWARD, str(grader.get("name", "grader")), str(grader.get("type")), grader)]
    subs = grader.get("graders") if grader.get("type") == "multi" else None
    if isinstance(subs, dict) and "type" not in subs:
        for i, (key, sub) in enumerate(subs.items(), start=1):
            out.append((f"{MAIN_REWARD}_{i}", str(key), str(sub.get("type")), sub))
    return out


def grpo_rewards(grader: dict, judges: dict[str, str]) -> list[dict]:
    """``grpo.rewards`` of the run config; ``judges`` maps grader model names to local paths."""
    rewards = []
    for name, _, _, spec in reward_graders(grader):
        reward = {
            "type": "grader",
            "grader": spec,
            "name": name,
            "weight": 1.0 if name == MAIN_REWARD else 0.0,
        }
        used = {m: p for m, p in judges.items() if m in model_names(spec)}
        if used:
            reward["judge_model"] = used
        rewards.append(reward)
    return rewards


def model_names(spec: dict) -> set[str]:
    """The ``model`` names of a grader object's score_model / label_model graders."""
    if spec.get("type") == "multi" and isinstance(spec.get("graders"), dict):
        subs = spec["graders"].values() if "type" not in spec["graders"] else [spec["graders"]]
        return {name for sub in subs for name in model_names(sub)}
    return {spec["model"]} if spec.get("type") in ("score_model", "label_model") else set()


def train_section(h: dict, has_validation: bool) -> dict:
    """The ``train:`` keys an RFT job sets beyond the shared ones: evaluation and checkpoints
    at every ``eval_interval`` steps, and (with a validation file) a baseline evaluation before
    the first step."""
    return {
        "eval_every": int(h["eval_interval"]),
        "save_every": int(h["eval_interval"]),
        "eval_at_start": has_validation,
    }


def grpo_section(h: dict, grader: dict, judges: dict[str, str]) -> dict:
    """The ``grpo:`` section of an RFT job's run config (the operator's ``--set grpo.KEY=…``
    are applied after it)."""
    return {"group_size": group_size(float(h["compute_multiplier"])), "rewards": grpo_rewards(grader, judges)}
