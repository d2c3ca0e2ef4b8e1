"""A reinforcement job's progress in OpenAI's shapes: ``metrics`` events, checkpoint metrics and
the results file, from the GRPO rows of ``metrics.jsonl`` (docs/grpo.md, "Metrics").

OpenAI's RFT metrics event (its guide, "Training metrics") reads::

    message: "Step 10/20 , train mean reward=0.42, full validation mean reward=0.68, full validation mean parse error=0.00"
    data: {step, total_steps, train_mean_reward, full_valid_mean_reward, full_valid_mean_parse_error,
           completion_tokens_mean, scores: {train_reward_mean, valid_reward_mean,
           graders: [{name, type, train_reward_mean, valid_reward_mean}]}, errors: {graders: […]},
           timing: {step: {…}}, usage: {…}}

The message is OpenAI's text as it is (the space before the first comma included); the
validation parts appear on steps that evaluated. ``data`` has those keys, from GRPO's metrics:
``train_mean_reward`` = ``scores.train_reward_mean`` = the step's mean reward over its
completions (``reward``); ``full_valid_mean_reward`` = ``scores.valid_reward_mean`` = the mean
over ``group_size`` samples of every validation example (``eval_reward``); per grader (the
grader, and a multi grader's sub-graders) its mean score; ``errors.graders[].train_error_mean``
/ ``valid_error_mean`` the fraction of samples the grader could not grade (scored 0; OpenAI
splits this by error kind, tunesmith counts them together), and ``full_valid_mean_parse_error``
is that fraction for the grader on the validation samples. tunesmith adds GRPO's own numbers:
``train_reward_std`` / ``valid_reward_std`` (mean within-group standard deviation of the reward),
``train_loss``, ``kl``, ``zero_std_fraction``. Reasoning-token and judge-token usage are not
reported (open models here have no separate reasoning tokens).

A checkpoint's ``metrics`` (it is written at an evaluation step) hold ``step``, ``train_loss``,
``train_reward_mean``, ``train_reward_std``, ``valid_reward_mean``, ``valid_reward_std``,
``full_valid_mean_reward`` and ``scores`` as in the event.
"""

from __future__ import annotations

from typing import Any

from .rft import reward_graders

RESULTS_HEADER = [
    "step",
    "train_loss",
    "train_reward_mean",
    "train_reward_std",
    "valid_reward_mean",
    "valid_reward_std",
]


def _fmt(x: float) -> str:
    return f"{x:.2f}"


def _evaluated(row: dict) -> bool:
    return "eval_reward" in row


def step_message(row: dict, total: int | None, grader: dict) -> str:
    """OpenAI's RFT step message (module doc)."""
    text = f"Step {row['step']}/{total or '?'} , train mean reward={_fmt(row['reward'])}"
    if _evaluated(row):
        text += (
            f", full validation mean reward={_fmt(row['eval_reward'])}, full validation mean parse "
            f"error={_fmt(_error(row, 'eval_', reward_graders(grader)[0][0]) or 0.0)}"
        )
    return text


def _error(row: dict, prefix: str, name: str) -> float | None:
    return row.get(f"{prefix}reward_{name}_errors")


def _scores(row: dict, grader: dict) -> dict:
    scores: dict[str, Any] = {
        "train_reward_mean": row.get("reward"),
        "train_reward_std": row.get("reward_std"),
    }
    if _evaluated(row):
        scores.update(valid_reward_mean=row["eval_reward"], valid_reward_std=row.get("eval_reward_std"))
    graders = []
    for metric, name, kind, _ in reward_graders(grader):
        entry = {"name": name, "type": kind, "train_reward_mean": row.get(f"reward_{metric}")}
        if _evaluated(row):
            entry["valid_reward_mean"] = row.get(f"eval_reward_{metric}")
        graders.append(entry)
    scores["graders"] = graders
    return scores


def _errors(row: dict, grader: dict) -> dict:
    graders = []
    for metric, name, kind, _ in reward_graders(grader):
        entry = {"name": name, "type": kind, "train_error_mean": _error(row, "", metric)}
        if _evaluated(row):
            entry["valid_error_mean"] = _error(row, "eval_", metric)
        graders.append(entry)
    return {"graders": graders}


def event_data(row: dict, total: int | None, grader: dict) -> dict:
    """A ``metrics`` event's ``data`` for one GRPO row (module doc)."""
    data = {
        "step": row["step"],
        "total_steps": total,
        "train_mean_reward": row.get("reward"),
        "train_reward_std": row.get("reward_std"),
        "train_loss": row.get("loss"),
        "completion_tokens_mean": row.get("completion_length"),
        "kl": row.get("kl"),
        "zero_std_fraction": row.get("zero_std_fraction"),
        "scores": _scores(row, grader),
        "errors": _errors(row, grader),
        "timing": {"step": {"full_iteration": row.get("step_time_s")}},
    }
    if _evaluated(row):
        data.update(
            full_valid_mean_reward=row["eval_reward"],
            valid_reward_std=row.get("eval_reward_std"),
            full_valid_mean_parse_error=_error(row, "eval_", reward_graders(grader)[0][0]) or 0.0,
        )
    return data


def checkpoint_metrics(row: dict, grader: dict) -> dict:
    """A checkpoint's ``metrics`` (module doc)."""
    out = {
        "step": row["step"],
        "train_loss": row.get("loss"),
        "train_reward_mean": row.get("reward"),
        "train_reward_std": row.get("reward_std"),
        "valid_reward_mean": row.get("eval_reward"),
        "valid_reward_std": row.get("eval_reward_std"),
        "full_valid_mean_reward": row.get("eval_reward"),
        "scores": _scores(row, grader),
    }
    return out


def baseline_message(row: dict) -> str:
    """The event for the evaluation before the first step (step 0)."""
    return f"Before training: full validation mean reward={_fmt(row['eval_reward'])}"


def results_row(row: dict) -> list:
    """One line of the results file (:data:`RESULTS_HEADER`)."""
    return [
        row["step"],
        row.get("loss", ""),
        row.get("reward", ""),
        row.get("reward_std", ""),
        row.get("eval_reward", ""),
        row.get("eval_reward_std", ""),
    ]
