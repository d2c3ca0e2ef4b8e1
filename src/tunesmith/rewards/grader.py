"""GRPO reward ``type: grader``: an OpenAI grader (docs/graders.md) scores each completion.

``grpo.rewards: [{type: grader, grader: {…} or FILE, judge_model?: …, weight, name}]``. For each
completion the grader sees, in OpenAI's namespaces:

* ``sample`` — ``output_text``: the completion (decoded, special tokens removed, stripped);
  ``output_json``: that text parsed as JSON, or null when it is not JSON; ``output_tools`` and
  ``choices``: empty lists (:func:`tunesmith.graders.make_sample`);
* ``item`` — the example's row: every field besides the prompt, plus ``prompt`` (as written)
  and ``messages`` (the prompt as a message list; a string prompt is one user message), so a
  grader written for OpenAI's RFT rows (``messages`` + extra keys) reads the same fields.

A completion the grader cannot grade (a template variable the row lacks, a python grader that
raises, a judge reply without a number …) scores 0, as OpenAI scores a grader error; each
rollout logs how many did, and the metric ``reward_<name>_errors`` is the fraction per step.
A grader that could grade nothing — an invalid definition, a python grader where no sandbox
works, a model grader without a loadable local judge — is a ConfigError before training.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from ..errors import ConfigError, TunesmithError
from . import Sample

log = logging.getLogger("tunesmith")


@dataclass
class GraderSetup:
    """A grader reward's parsed grader, its default metric name and its judges
    (``{grader model name: local model path}``, empty without model graders)."""

    grader: object
    name: str
    judges: dict[str, str]


def resolve(spec, where: str) -> GraderSetup:
    """Parse ``spec.grader`` and map its model graders to local judges (no model is loaded);
    ConfigError naming ``grpo.rewards[i].grader…`` or ``….judge_model`` for any problem."""
    from ..graders import GraderError, judge_paths, read_grader
    from ..graders.judge import check_text_only

    judge_model = spec.judge_model
    if isinstance(judge_model, dict) and not all(
        isinstance(k, str) and isinstance(v, str) for k, v in judge_model.items()
    ):
        raise ConfigError(
            f"config: '{where}.judge_model' must be a path or a mapping of grader model names to paths"
        )
    try:
        grader, name = read_grader(spec.grader, f"{where}.grader")
        check_text_only(grader, f"{where}.grader")
        judges = judge_paths([(f"{where}.grader", grader)], judge_model, f"'{where}.judge_model'")
    except GraderError as exc:
        raise ConfigError(f"config: '{exc.path}': {exc.bare_message}") from None
    except ValueError as exc:
        raise ConfigError(f"config: {exc}") from None
    return GraderSetup(grader, name, judges)


def required_item_keys(spec, where: str) -> set[str]:
    """The example fields the grader's templates read (``prompt`` / ``messages`` come from the
    prompt itself)."""
    from ..graders import item_keys

    return item_keys(resolve(spec, where).grader) - {"prompt", "messages"}


def grader_item(sample: Sample) -> dict:
    """The ``item`` namespace of one completion (module docstring)."""
    prompt = sample.prompt
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return {"prompt": prompt, "messages": messages, **sample.extra}


class GradedScores(list):
    """Scores with ``errors``: per completion, whether the grader failed (and scored 0)."""

    def __init__(self, scores, errors):
        super().__init__(scores)
        self.errors = list(errors)


def grader_reward(spec, where: str, *, device=None, dtype: str = "auto"):
    """The score function of a ``type: grader`` reward (module docstring); the judge models are
    loaded here, once, on ``device`` in the run's ``dtype`` (``train.dtype``; auto: bf16 on a
    CUDA device that supports it, else fp32)."""
    from ..graders import GraderError, LocalJudge, check_runnable, grade_many

    setup = resolve(spec, where)
    judge = LocalJudge(setup.judges, device=device or "cpu", dtype=dtype) if setup.judges else None
    try:
        check_runnable(setup.grader, judge=judge, path=f"{where}.grader")
    except GraderError as exc:
        raise ConfigError(f"config: '{exc.path}': {exc.bare_message}") from None
    if judge is not None:
        try:
            judge.load()
        except TunesmithError as exc:
            raise ConfigError(f"config: '{where}.judge_model': cannot load the judge: {exc}") from None
    label = f"{where} ({spec.name or setup.name})"

    def score(samples: list[Sample]) -> GradedScores:
        results = grade_many(
            setup.grader,
            [{"output_text": s.completion} for s in samples],
            [grader_item(s) for s in samples],
            judge=judge,
        )
        failed = [r for r in results if r.error is not None]
        if failed:
            log.warning(
                "%s: %d of %d completions could not be graded and score 0 (first: %s)",
                label,
                len(failed),
                len(results),
                failed[0].error,
            )
        return GradedScores([r.score for r in results], [r.error is not None for r in results])

    score.default_name = re.sub(r"[^0-9a-z_]+", "_", setup.name.lower()).strip("_") or "grader"
    return score
