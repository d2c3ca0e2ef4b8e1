"""Grading samples: :func:`grade` for one, :func:`grade_many` for a batch.

The result mirrors OpenAI's ``POST /v1/fine_tuning/alpha/graders/run`` response
(``openai.types.fine_tuning.alpha.GraderRunResponse``); :meth:`GraderResult.to_openai` is that
JSON, so the jobs API can return it unchanged.

Contract:

* An invalid grader definition, or one that cannot run as configured (a model grader without a
  ``judge``, ``cosine`` without an ``embed`` function, a missing metric library) raises
  :class:`~tunesmith.graders.spec.GraderError` before any sample is graded.
* Anything that goes wrong for one sample — a template variable it lacks, a python grader that
  raises, hangs or returns NaN, a judge reply that cannot be parsed, a formula that divides by
  zero — never raises: that sample's result has ``score`` 0.0, ``error`` set, and the matching
  flag in ``metadata["errors"]`` (OpenAI's field names).
* A multi grader's reward is its ``calculate_output`` over the sub-graders' scores, which are
  reported in ``sub_scores`` (OpenAI: ``sub_rewards``) and ``metadata["scores"]``. If any
  sub-grader fails for a sample, the multi reward is 0.0 with the sub-grader's error: a formula
  over a missing score has no honest value.
* ``metadata["execution_time"]`` is seconds for that sample; work done for a whole batch (one
  sandbox process, one judge call) is shared equally among its samples, except that a python
  grader's per-sample time is measured.

A *sample* is either the model's output text or a dict in OpenAI's ``sample`` namespace shape
(``output_text`` plus optional ``output_json``, ``output_tools``, ``choices``); see
:func:`make_sample`. An *item* is the dataset row (a dict).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import jsontext
from . import model_graders, sandbox, similarity, template
from .formula import FormulaError
from .model_graders import Judge, JudgeReply, ReplyParseError
from .sandbox import SandboxConfig
from .similarity import Embedder, MissingLibrary
from .spec import (
    Grader,
    GraderError,
    LabelModel,
    Multi,
    Python,
    ScoreModel,
    StringCheck,
    TextSimilarity,
    parse_grader,
)

ERROR_FLAGS = (
    "formula_parse_error",
    "invalid_variable_error",
    "model_grader_parse_error",
    "model_grader_refusal_error",
    "model_grader_server_error",
    "other_error",
    "python_grader_runtime_error",
    "python_grader_server_error",
    "sample_parse_error",
    "truncated_observation_error",
    "unresponsive_reward_error",
)
ERROR_DETAILS = (
    "model_grader_server_error_details",
    "python_grader_runtime_error_details",
    "python_grader_server_error_type",
)


@dataclass
class GraderResult:
    """One sample's grade. ``score`` is OpenAI's ``reward``; ``error`` is None on success."""

    score: float
    sub_scores: dict[str, float]
    error: str | None
    metadata: dict[str, Any]
    token_usage_per_model: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_openai(self) -> dict[str, Any]:
        """The ``graders/run`` response body for this sample."""
        return {
            "reward": self.score,
            "metadata": self.metadata,
            "sub_rewards": dict(self.sub_scores),
            "model_grader_token_usage_per_model": self.token_usage_per_model,
        }


def make_sample(output: str | dict[str, Any]) -> dict[str, Any]:
    """The ``sample`` namespace for a model output: ``output_text``; ``output_json``, the text
    parsed as JSON when it is valid JSON (else None); ``output_tools`` and ``choices`` (lists,
    empty unless given). A dict is completed the same way; it must hold ``output_text``."""
    if isinstance(output, str):
        output = {"output_text": output}
    if not isinstance(output, dict) or not isinstance(output.get("output_text"), str):
        raise ValueError("a sample must be a string or an object with a string output_text")
    sample = dict(output)
    if "output_json" not in sample:
        try:
            sample["output_json"] = jsontext.loads(sample["output_text"], allow_nan=False)
        except (ValueError, UnicodeDecodeError):
            sample["output_json"] = None
    sample.setdefault("output_tools", [])
    sample.setdefault("choices", [])
    return sample


def grade(
    grader: Grader | dict,
    sample: str | dict,
    item: dict | None = None,
    *,
    judge: Judge | None = None,
    embed: Embedder | None = None,
    sandbox_config: SandboxConfig = SandboxConfig(),
) -> GraderResult:
    """Grade one sample (see the module contract)."""
    return grade_many(grader, [sample], [item], judge=judge, embed=embed, sandbox_config=sandbox_config)[0]


def grade_many(
    grader: Grader | dict,
    samples: Sequence[str | dict],
    items: Sequence[dict | None],
    *,
    judge: Judge | None = None,
    embed: Embedder | None = None,
    sandbox_config: SandboxConfig = SandboxConfig(),
) -> list[GraderResult]:
    """Grade ``samples[k]`` against ``items[k]`` for every k, batching python graders into one
    sandbox process per batch and model graders into one judge call."""
    spec = grader if not isinstance(grader, dict) else parse_grader(grader)
    if len(samples) != len(items):
        raise GraderError("samples", f"{len(samples)} samples but {len(items)} items")
    _check_runnable(spec, "grader", judge, embed)
    context = _Context(judge, embed, sandbox_config)
    prepared: list[tuple[dict, dict] | None] = []
    bad_sample: dict[int, str] = {}
    for k, (raw, item) in enumerate(zip(samples, items)):
        try:
            if item is not None and not isinstance(item, dict):
                raise ValueError("an item must be an object")
            prepared.append((make_sample(raw), item or {}))
        except ValueError as exc:
            prepared.append(None)
            bad_sample[k] = str(exc)
    good = [k for k, p in enumerate(prepared) if p is not None]
    cases = [prepared[k] for k in good]
    if isinstance(spec, Multi):
        results = _grade_multi(spec, cases, context)
    else:
        results = [_result(spec, o) for o in _evaluate(spec, cases, context)]
    out: list[GraderResult] = []
    by_index = dict(zip(good, results))
    for k in range(len(samples)):
        if k in by_index:
            out.append(by_index[k])
        else:
            failed = _Outcome(None, bad_sample[k], {"sample_parse_error": True})
            out.append(_result(spec, failed))
    return out


def check_runnable(
    grader: Grader,
    *,
    judge: Judge | None = None,
    embed: Embedder | None = None,
    sandbox_config: SandboxConfig = SandboxConfig(),
    path: str = "grader",
) -> None:
    """GraderError (naming the field) when ``grade_many`` with this setup could grade no sample:
    what :func:`grade_many` itself checks (a model grader without a judge, ``cosine`` without
    ``embed``, a metric library that is missing), and for python graders that no sandbox
    backend works here or that the source does not compile (checked inside the sandbox). For
    callers that start long work — a GRPO run, an evaluation — before the first batch."""
    _check_runnable(grader, path, judge, embed)
    pythons = (
        [(f"{path}.graders.{k}", g) for k, g in grader.graders.items()]
        if isinstance(grader, Multi)
        else [(path, grader)]
    )
    for where, spec in pythons:
        if not isinstance(spec, Python):
            continue
        try:
            sandbox.resolve_backend(sandbox_config)
        except sandbox.SandboxUnavailable as exc:
            raise GraderError(where, f"cannot run a python grader here: {exc}") from None
        problem = sandbox.check_source(spec.source, sandbox_config)
        if problem is not None:
            raise GraderError(f"{where}.source", problem)


# --- internals ---------------------------------------------------------------------------------


@dataclass
class _Context:
    judge: Judge | None
    embed: Embedder | None
    sandbox: SandboxConfig


@dataclass
class _Outcome:
    score: float | None
    error: str | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    tokens: dict[str, dict[str, int]] = field(default_factory=dict)


def _check_runnable(spec: Grader, path: str, judge: Judge | None, embed: Embedder | None) -> None:
    if isinstance(spec, Multi):
        for key, sub in spec.graders.items():
            _check_runnable(sub, f"{path}.graders.{key}", judge, embed)
    elif isinstance(spec, (ScoreModel, LabelModel)) and judge is None:
        raise GraderError(path, f"a {spec.type} grader needs a judge model function; none is configured")
    elif isinstance(spec, TextSimilarity):
        if spec.evaluation_metric == "cosine" and embed is None:
            raise GraderError(
                f"{path}.evaluation_metric",
                "cosine similarity needs an embedding function; none is configured",
            )
        if spec.evaluation_metric != "cosine":
            try:
                similarity.similarity(spec.evaluation_metric, "a", "a")
            except MissingLibrary as exc:
                raise GraderError(f"{path}.evaluation_metric", str(exc)) from None


def _evaluate(spec: Grader, cases: list[tuple[dict, dict]], ctx: _Context) -> list[_Outcome]:
    if not cases:
        return []
    if isinstance(spec, StringCheck):
        return [_timed(_string_check, spec, s, i) for s, i in cases]
    if isinstance(spec, TextSimilarity):
        return [_timed(_text_similarity, spec, s, i, ctx.embed) for s, i in cases]
    if isinstance(spec, Python):
        return _python(spec, cases, ctx.sandbox)
    if isinstance(spec, (ScoreModel, LabelModel)):
        return _model(spec, cases, ctx.judge)
    raise AssertionError(f"unhandled grader {type(spec).__name__}")


def _timed(fn, *args) -> _Outcome:
    start = time.perf_counter()
    try:
        outcome = fn(*args)
    except template.TemplateVariableError as exc:
        outcome = _Outcome(None, str(exc), {"invalid_variable_error": True})
    outcome.seconds = time.perf_counter() - start
    return outcome


def _string_check(spec: StringCheck, sample: dict, item: dict) -> _Outcome:
    text = template.render(spec.input, sample=sample, item=item)
    reference = template.render(spec.reference, sample=sample, item=item)
    if spec.operation == "eq":
        hit = text == reference
    elif spec.operation == "ne":
        hit = text != reference
    elif spec.operation == "like":
        hit = reference in text
    else:  # ilike
        hit = reference.casefold() in text.casefold()
    return _Outcome(1.0 if hit else 0.0)


def _text_similarity(spec: TextSimilarity, sample: dict, item: dict, embed: Embedder | None) -> _Outcome:
    text = template.render(spec.input, sample=sample, item=item)
    reference = template.render(spec.reference, sample=sample, item=item)
    try:
        value = similarity.similarity(spec.evaluation_metric, text, reference, embed=embed)
    except Exception as exc:  # noqa: BLE001 - an embedding function's failure is per sample
        return _Outcome(None, f"{spec.evaluation_metric}: {exc}", {"other_error": True})
    if not math.isfinite(value):
        return _Outcome(None, f"{spec.evaluation_metric} gave {value}", {"other_error": True})
    return _Outcome(float(value))


def _python(spec: Python, cases: list[tuple[dict, dict]], config: SandboxConfig) -> list[_Outcome]:
    outcomes = []
    for case in sandbox.run_python_grader(spec.source, cases, config):
        if case.error is None:
            outcomes.append(_Outcome(case.score, seconds=case.seconds))
        elif case.kind == "runtime":
            outcomes.append(
                _Outcome(
                    None,
                    case.error,
                    {"python_grader_runtime_error": True, "python_grader_runtime_error_details": case.error},
                    case.seconds,
                )
            )
        elif case.kind == "timeout":
            outcomes.append(_Outcome(None, case.error, {"unresponsive_reward_error": True}, case.seconds))
        else:
            outcomes.append(
                _Outcome(
                    None,
                    case.error,
                    {"python_grader_server_error": True, "python_grader_server_error_type": "sandbox"},
                    case.seconds,
                )
            )
    return outcomes


def _model(spec: ScoreModel | LabelModel, cases: list[tuple[dict, dict]], judge: Judge) -> list[_Outcome]:
    start = time.perf_counter()
    outcomes: list[_Outcome | None] = [None] * len(cases)
    requests, asked = [], []
    for k, (sample, item) in enumerate(cases):
        try:
            requests.append(model_graders.render_messages(spec.input, sample=sample, item=item))
            asked.append(k)
        except template.TemplateVariableError as exc:
            outcomes[k] = _Outcome(None, str(exc), {"invalid_variable_error": True})
    replies: Sequence[Any] = []
    failure = None
    if requests:
        try:
            replies = list(judge(requests, model_graders.judge_params(spec)))
            if len(replies) != len(requests):
                failure = f"the judge returned {len(replies)} replies for {len(requests)} requests"
        except Exception as exc:  # noqa: BLE001 - an inference failure is per batch, not fatal
            failure = f"the judge failed: {type(exc).__name__}: {exc}"
    for n, k in enumerate(asked):
        if failure is not None:
            outcomes[k] = _Outcome(
                None,
                failure,
                {"model_grader_server_error": True, "model_grader_server_error_details": failure},
            )
        else:
            outcomes[k] = _parse_reply(spec, replies[n])
    per_sample = (time.perf_counter() - start) / len(cases)
    for outcome in outcomes:
        outcome.seconds = per_sample
    return outcomes


def _parse_reply(spec: ScoreModel | LabelModel, reply: Any) -> _Outcome:
    if isinstance(reply, str):
        reply = JudgeReply(reply)
    if not isinstance(reply, JudgeReply) or not isinstance(reply.text, str):
        detail = f"the judge returned {type(reply).__name__}, expected str or JudgeReply"
        return _Outcome(
            None, detail, {"model_grader_server_error": True, "model_grader_server_error_details": detail}
        )
    tokens = {
        spec.model: {
            "prompt_tokens": int(reply.prompt_tokens),
            "completion_tokens": int(reply.completion_tokens),
            "total_tokens": int(reply.prompt_tokens + reply.completion_tokens),
        }
    }
    if reply.refusal:
        return _Outcome(
            None, "the judge refused to grade", {"model_grader_refusal_error": True}, tokens=tokens
        )
    try:
        if isinstance(spec, ScoreModel):
            return _Outcome(model_graders.parse_score(reply.text, spec.range), tokens=tokens)
        label = model_graders.parse_label(reply.text, spec.labels)
        return _Outcome(1.0 if label in spec.passing_labels else 0.0, tokens=tokens)
    except ReplyParseError as exc:
        return _Outcome(None, str(exc), {"model_grader_parse_error": True}, tokens=tokens)


def _grade_multi(spec: Multi, cases: list[tuple[dict, dict]], ctx: _Context) -> list[GraderResult]:
    per_grader = {key: _evaluate(sub, cases, ctx) for key, sub in spec.graders.items()}
    results = []
    for k in range(len(cases)):
        subs = {key: outs[k] for key, outs in per_grader.items()}
        flags: dict[str, Any] = {}
        tokens: dict[str, dict[str, int]] = {}
        errors = []
        for key, sub in subs.items():
            for name, value in sub.flags.items():
                flags[name] = flags.get(name) or value
            for model, usage in sub.tokens.items():
                total = tokens.setdefault(model, dict.fromkeys(usage, 0))
                for field_name, count in usage.items():
                    total[field_name] += count
            if sub.error is not None:
                errors.append(f"{key}: {sub.error}")
        scores = {key: (sub.score if sub.score is not None else 0.0) for key, sub in subs.items()}
        outcome = _Outcome(
            None, "; ".join(errors) or None, flags, sum(sub.seconds for sub in subs.values()), tokens
        )
        if not errors:
            start = time.perf_counter()
            try:
                outcome.score = spec.formula.evaluate(scores)
            except FormulaError as exc:
                outcome.error, outcome.flags["other_error"] = str(exc), True
            outcome.seconds += time.perf_counter() - start
        results.append(_result(spec, outcome, scores))
    return results


def _result(spec: Grader, outcome: _Outcome, sub_scores: dict[str, float] | None = None) -> GraderResult:
    errors: dict[str, Any] = {name: bool(outcome.flags.get(name)) for name in ERROR_FLAGS}
    for name in ERROR_DETAILS:
        errors[name] = outcome.flags.get(name)
    if outcome.error is not None and not any(errors[name] for name in ERROR_FLAGS):
        errors["other_error"] = True
    usage = outcome.tokens
    metadata = {
        "name": spec.name,
        "type": spec.type,
        "errors": errors,
        "execution_time": outcome.seconds,
        "scores": dict(sub_scores or {}),
        "token_usage": (sum(u["total_tokens"] for u in usage.values()) if usage else None),
        "sampled_model_name": spec.model if isinstance(spec, (ScoreModel, LabelModel)) else None,
    }
    score = outcome.score if outcome.error is None and outcome.score is not None else 0.0
    return GraderResult(
        score=float(score),
        sub_scores=dict(sub_scores or {}),
        error=outcome.error,
        metadata=metadata,
        token_usage_per_model=usage,
    )
