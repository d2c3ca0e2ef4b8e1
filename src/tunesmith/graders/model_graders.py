"""``score_model`` and ``label_model``: a judge model's reply turned into a reward.

The judge is injected by the caller (:class:`tunesmith.graders.judge.LocalJudge`, a local model
through tunesmith's own generation, for GRPO rewards and ``tunesmith eval``; any function in
tests)::

    judge(requests: list[list[message]], params: dict) -> list[str | JudgeReply]

One call carries every sample of a batch, so an inference engine can batch them. Each request is
the grader's ``input`` messages with templates filled in, as chat messages ``{"role",
"content"}``: ``content`` is a string when every part is text, else the list of parts
(``input_text`` / ``output_text`` / ``input_image`` / ``input_audio`` dicts, text and image URLs
templated). ``params`` holds ``model`` (the grader's ``model``), the grader's
``sampling_params`` and ``response_format``: the JSON schema OpenAI's model graders ask for
(``{"result": number}`` / ``{"result": one of labels}``), which a judge may use for constrained
decoding or ignore. The judge returns one reply per request, in order.

Reply parsing (:func:`parse_score`, :func:`parse_label`):

* score_model — a JSON object ``{"result": x}`` (optionally in a ```json fence) gives ``x``;
  otherwise the first number in the text. A reply with no number, or a number outside the
  grader's ``range``, is a parse error (never clamped: a judge answering 7 on a 0–1 scale has
  misread the scale, and clamping would hide it).
* label_model — ``{"result": "label"}``, else the whole reply stripped of spaces, quotes,
  backticks and a final period, matched exactly against ``labels``, else case-insensitively if
  exactly one label matches. The score is 1.0 for a label in ``passing_labels``, else 0.0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import jsontext
from . import template
from .spec import LabelModel, Message, ScoreModel

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


@dataclass(frozen=True)
class JudgeReply:
    """A judge's reply with optional usage counts; a judge may return plain strings instead."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    refusal: bool = False


Judge = Callable[[list[list[dict[str, Any]]], dict[str, Any]], Sequence["str | JudgeReply"]]


class ReplyParseError(ValueError):
    """A judge reply that does not hold a usable score or label."""


def render_messages(messages: Sequence[Message], *, sample: dict, item: dict) -> list[dict]:
    """The judge request for one sample (raises ``template.TemplateVariableError``)."""
    out = []
    for message in messages:
        parts = []
        for part in message.content:
            part = dict(part)
            if "text" in part:
                part["text"] = template.render(part["text"], sample=sample, item=item)
            if "image_url" in part:
                part["image_url"] = template.render(part["image_url"], sample=sample, item=item)
            parts.append(part)
        if all(p["type"] in ("input_text", "output_text") for p in parts):
            out.append({"role": message.role, "content": "".join(p["text"] for p in parts)})
        else:
            out.append({"role": message.role, "content": parts})
    return out


def judge_params(spec: ScoreModel | LabelModel) -> dict[str, Any]:
    """The ``params`` argument of the judge call for ``spec``."""
    if isinstance(spec, ScoreModel):
        result: dict[str, Any] = {"type": "number", "minimum": spec.range[0], "maximum": spec.range[1]}
        params = dict(spec.sampling_params)
    else:
        result = {"type": "string", "enum": list(spec.labels)}
        params = {}
    schema = {
        "type": "object",
        "properties": {"result": result},
        "required": ["result"],
        "additionalProperties": False,
    }
    return {
        "model": spec.model,
        **params,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "grader_result", "schema": schema, "strict": True},
        },
    }


def parse_score(reply: str, value_range: tuple[float, float]) -> float:
    """The score in a score_model judge's reply (see the module docstring)."""
    value = _json_result(reply)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        match = _NUMBER.search(reply)
        if match is None:
            raise ReplyParseError(f"the judge's reply has no number: {_clip(reply)}")
        value = float(match.group(0))
    value = float(value)
    lo, hi = value_range
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ReplyParseError(f"the judge's score {value:g} is outside the range [{lo:g}, {hi:g}]")
    return value


def parse_label(reply: str, labels: Sequence[str]) -> str:
    """The label in a label_model judge's reply (see the module docstring)."""
    value = _json_result(reply)
    text = value if isinstance(value, str) else reply
    text = text.strip().strip("`'\"").strip()
    if text.endswith(".") and text[:-1] in labels:
        text = text[:-1]
    if text in labels:
        return text
    folded = [label for label in labels if label.casefold() == text.rstrip(".").casefold()]
    if len(folded) == 1:
        return folded[0]
    raise ReplyParseError(f"the judge's reply is not one of the labels {list(labels)}: {_clip(reply)}")


def _json_result(reply: str) -> Any:
    text = reply.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    if not text.startswith("{"):
        return None
    try:
        obj = jsontext.loads(text, max_depth=5, allow_nan=False)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj.get("result") if isinstance(obj, dict) else None


def _clip(text: str, limit: int = 200) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")
