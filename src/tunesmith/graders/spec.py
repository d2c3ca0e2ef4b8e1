"""Grader definitions: OpenAI's grader JSON shapes parsed and checked into typed objects.

:func:`parse_grader` accepts exactly the shapes of the official ``openai`` SDK's grader params
(``openai.types.graders.*_param``): ``string_check``, ``text_similarity``, ``python``,
``score_model``, ``label_model`` and ``multi``. Every problem is a :class:`GraderError` whose
message starts with the dotted path of the offending field (``grader.graders.acc.operation``),
so a web API can return it as-is.

Choices where the SDK types leave room:

* ``multi.graders`` is a JSON object mapping a name to a sub-grader, as OpenAI's guide and
  examples use it; the names are the variables of ``calculate_output`` and must therefore be
  identifiers. (The generated SDK types show a single grader there; a single grader object is
  accepted too and named by its ``name``.) A sub-grader may not itself be ``multi``.
* ``pass_threshold`` (a number), which the evals API adds to some graders, is accepted on every
  non-multi grader and kept, but plays no part in the score.
* ``python.image_tag`` is accepted and kept; tunesmith runs every python grader on the server's
  own interpreter (see :mod:`tunesmith.graders.sandbox`).
* The python source is *not* compiled here: parsing untrusted code in the server process is
  avoided; syntax errors are reported by the sandbox (see ``sandbox.check_source``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import TunesmithError
from . import template
from .formula import Formula, FormulaSyntaxError, parse_formula

STRING_CHECK_OPERATIONS = ("eq", "ne", "like", "ilike")
SIMILARITY_METRICS = (
    "cosine",
    "fuzzy_match",
    "bleu",
    "gleu",
    "meteor",
    "rouge_1",
    "rouge_2",
    "rouge_3",
    "rouge_4",
    "rouge_5",
    "rouge_l",
)
ROLES = ("user", "assistant", "system", "developer")
SAMPLING_PARAMS = {
    "max_completions_tokens": int,
    "reasoning_effort": str,
    "seed": int,
    "temperature": float,
    "top_p": float,
}
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
MAX_PYTHON_SOURCE_BYTES = 256 * 1024  # OpenAI's documented limit for python grader code


class GraderError(TunesmithError):
    """An invalid grader definition, or a grader that cannot run as configured.

    ``path`` is the dotted field path (``grader.graders.acc.operation``); the message starts
    with it.
    """

    def __init__(self, path: str, message: str):
        self.path = path
        self.bare_message = message
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True)
class StringCheck:
    name: str
    input: str
    reference: str
    operation: str
    pass_threshold: float | None = None
    type: str = "string_check"


@dataclass(frozen=True)
class TextSimilarity:
    name: str
    input: str
    reference: str
    evaluation_metric: str
    pass_threshold: float | None = None
    type: str = "text_similarity"


@dataclass(frozen=True)
class Python:
    name: str
    source: str
    image_tag: str | None = None
    pass_threshold: float | None = None
    type: str = "python"


@dataclass(frozen=True)
class Message:
    """One judge input message. ``content`` is always a list of parts, each a dict with a
    ``type`` (``input_text`` / ``output_text`` / ``input_image`` / ``input_audio``); a plain
    string in the definition becomes one ``input_text`` part."""

    role: str
    content: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class ScoreModel:
    name: str
    model: str
    input: tuple[Message, ...]
    range: tuple[float, float] = (0.0, 1.0)
    sampling_params: dict[str, Any] = field(default_factory=dict)
    pass_threshold: float | None = None
    type: str = "score_model"


@dataclass(frozen=True)
class LabelModel:
    name: str
    model: str
    input: tuple[Message, ...]
    labels: tuple[str, ...]
    passing_labels: tuple[str, ...]
    pass_threshold: float | None = None
    type: str = "label_model"


@dataclass(frozen=True)
class Multi:
    name: str
    graders: dict[str, SingleGrader]
    calculate_output: str
    formula: Formula
    type: str = "multi"


SingleGrader = StringCheck | TextSimilarity | Python | ScoreModel | LabelModel
Grader = SingleGrader | Multi


def parse_grader(obj: Any, path: str = "grader") -> Grader:
    """Parse and check one grader definition (a dict in OpenAI's shape)."""
    _require_object(obj, path)
    kind = obj.get("type")
    if kind == "multi":
        return _parse_multi(obj, path)
    if not isinstance(kind, str) or kind not in _PARSERS:  # a list or object is not a type name
        known = ", ".join([*_PARSERS, "multi"])
        shown = repr(kind)[:80]
        raise GraderError(f"{path}.type", f"unknown grader type {shown}; expected one of {known}")
    return _PARSERS[kind](obj, path)


def _parse_comparison(obj: dict, path: str, cls: type, key: str, allowed: tuple[str, ...], noun: str):
    """``string_check`` / ``text_similarity``: ``input`` compared with ``reference`` by the
    method named in field ``key`` (one of ``allowed``; ``noun`` names it in the error)."""
    _fields(obj, path, required=("type", "name", "input", "reference", key), optional=("pass_threshold",))
    method = obj[key]
    if method not in allowed:
        raise GraderError(f"{path}.{key}", f"unknown {noun} {method!r}; expected one of {', '.join(allowed)}")
    return cls(
        name=_name(obj, path),
        input=_template(obj, "input", path),
        reference=_template(obj, "reference", path),
        pass_threshold=_threshold(obj, path),
        **{key: method},
    )


def _parse_string_check(obj: dict, path: str) -> StringCheck:
    return _parse_comparison(obj, path, StringCheck, "operation", STRING_CHECK_OPERATIONS, "operation")


def _parse_text_similarity(obj: dict, path: str) -> TextSimilarity:
    return _parse_comparison(obj, path, TextSimilarity, "evaluation_metric", SIMILARITY_METRICS, "metric")


def _parse_python(obj: dict, path: str) -> Python:
    _fields(obj, path, required=("type", "name", "source"), optional=("image_tag", "pass_threshold"))
    source = obj["source"]
    if not isinstance(source, str) or not source.strip():
        raise GraderError(
            f"{path}.source",
            "must be a non-empty string of Python code defining grade(sample, item) -> float",
        )
    size = len(source.encode("utf-8", "surrogatepass"))
    if size > MAX_PYTHON_SOURCE_BYTES:
        raise GraderError(f"{path}.source", f"is {size} bytes; the limit is {MAX_PYTHON_SOURCE_BYTES} bytes")
    if "\x00" in source:
        raise GraderError(f"{path}.source", "contains a NUL character")
    image_tag = obj.get("image_tag")
    if image_tag is not None and not isinstance(image_tag, str):
        raise GraderError(f"{path}.image_tag", "must be a string")
    return Python(
        name=_name(obj, path), source=source, image_tag=image_tag, pass_threshold=_threshold(obj, path)
    )


def _parse_score_model(obj: dict, path: str) -> ScoreModel:
    _fields(
        obj,
        path,
        required=("type", "name", "model", "input"),
        optional=("range", "sampling_params", "pass_threshold"),
    )
    lo_hi = (0.0, 1.0)
    if "range" in obj:
        raw = obj["range"]
        if (
            not isinstance(raw, list)
            or len(raw) != 2
            or not all(_is_number(v) and math.isfinite(v) for v in raw)
            or raw[0] >= raw[1]
        ):
            raise GraderError(
                f"{path}.range", f"must be two finite numbers [low, high] with low < high, got {raw!r}"
            )
        lo_hi = (float(raw[0]), float(raw[1]))
    return ScoreModel(
        name=_name(obj, path),
        model=_model(obj, path),
        input=_messages(obj.get("input"), f"{path}.input"),
        range=lo_hi,
        sampling_params=_sampling_params(obj.get("sampling_params", {}), f"{path}.sampling_params"),
        pass_threshold=_threshold(obj, path),
    )


def _parse_label_model(obj: dict, path: str) -> LabelModel:
    _fields(
        obj,
        path,
        required=("type", "name", "model", "input", "labels", "passing_labels"),
        optional=("pass_threshold",),
    )
    labels = _labels(obj["labels"], f"{path}.labels")
    passing = _labels(obj["passing_labels"], f"{path}.passing_labels")
    stray = [label for label in passing if label not in labels]
    if stray:
        raise GraderError(f"{path}.passing_labels", f"{stray!r} are not among labels {list(labels)!r}")
    return LabelModel(
        name=_name(obj, path),
        model=_model(obj, path),
        input=_messages(obj.get("input"), f"{path}.input"),
        labels=labels,
        passing_labels=passing,
        pass_threshold=_threshold(obj, path),
    )


def _parse_multi(obj: dict, path: str) -> Multi:
    _fields(obj, path, required=("type", "name", "graders", "calculate_output"))
    raw = obj["graders"]
    _require_object(raw, f"{path}.graders")
    if isinstance(raw.get("type"), str):  # the SDK's single-grader form
        raw = {raw.get("name"): raw}
    if not raw:
        raise GraderError(f"{path}.graders", "must name at least one sub-grader")
    graders: dict[str, SingleGrader] = {}
    for key, sub in raw.items():
        sub_path = f"{path}.graders.{key}"
        if not isinstance(key, str) or not key.isidentifier() or key.startswith("__"):
            raise GraderError(
                sub_path,
                "a sub-grader's key must be an identifier (letters, "
                "digits, _) so calculate_output can refer to it",
            )
        if key in _RESERVED_NAMES:
            raise GraderError(sub_path, f"{key!r} is a function name in calculate_output; choose another key")
        _require_object(sub, sub_path)
        if sub.get("type") == "multi":
            raise GraderError(f"{sub_path}.type", "a multi grader's sub-grader cannot itself be multi")
        graders[key] = parse_grader(sub, sub_path)
    try:
        formula = parse_formula(obj["calculate_output"], set(graders))
    except FormulaSyntaxError as exc:
        raise GraderError(f"{path}.calculate_output", str(exc)) from None
    return Multi(
        name=_name(obj, path), graders=graders, calculate_output=obj["calculate_output"], formula=formula
    )


_PARSERS = {
    "string_check": _parse_string_check,
    "text_similarity": _parse_text_similarity,
    "python": _parse_python,
    "score_model": _parse_score_model,
    "label_model": _parse_label_model,
}
_RESERVED_NAMES = frozenset({"min", "max", "abs", "floor", "ceil", "exp", "sqrt", "log"})


# --- field helpers -----------------------------------------------------------------------


def _require_object(obj: Any, path: str) -> None:
    if not isinstance(obj, dict):
        raise GraderError(path, f"must be a JSON object, got {template.json_kind(obj)}")


def _fields(obj: dict, path: str, *, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    for key in obj:
        if key not in required and key not in optional:
            allowed = ", ".join([*required, *optional])
            raise GraderError(
                f"{path}.{key}", f"unknown field for a {obj.get('type')} grader; allowed: {allowed}"
            )
    for key in required:
        if key not in obj:
            raise GraderError(f"{path}.{key}", "is required")


def _name(obj: dict, path: str) -> str:
    name = obj["name"]
    if not isinstance(name, str) or not name.strip():
        raise GraderError(f"{path}.name", "must be a non-empty string")
    return name


def _model(obj: dict, path: str) -> str:
    model = obj["model"]
    if not isinstance(model, str) or not model.strip():
        raise GraderError(f"{path}.model", "must be a non-empty string naming the judge model")
    return model


def _template(obj: dict, key: str, path: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise GraderError(f"{path}.{key}", f"must be a string, got {template.json_kind(value)}")
    _check_template(value, f"{path}.{key}")
    return value


def _check_template(text: str, path: str) -> None:
    try:
        template.variables(text)
    except template.TemplateSyntaxError as exc:
        raise GraderError(path, str(exc)) from None


def _threshold(obj: dict, path: str) -> float | None:
    value = obj.get("pass_threshold")
    if value is None:
        return None
    if not _is_number(value) or not math.isfinite(value):
        raise GraderError(f"{path}.pass_threshold", "must be a finite number")
    return float(value)


def _labels(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise GraderError(path, "must be a non-empty list of non-empty strings")
    if len(set(value)) != len(value):
        raise GraderError(path, "has duplicate labels")
    return tuple(value)


_PART_FIELDS = {
    "input_text": ("text",),
    "output_text": ("text",),
    "input_image": ("image_url", "detail"),
    "input_audio": ("input_audio",),
}


def _messages(value: Any, path: str) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise GraderError(path, "must be a non-empty list of messages")
    out = []
    for i, msg in enumerate(value):
        where = f"{path}[{i}]"
        _require_object(msg, where)
        for key in msg:
            if key not in ("role", "content", "type"):
                raise GraderError(f"{where}.{key}", "unknown field; allowed: role, content, type")
        if msg.get("type", "message") != "message":
            raise GraderError(f"{where}.type", "must be 'message'")
        if msg.get("role") not in ROLES:
            raise GraderError(f"{where}.role", f"must be one of {', '.join(ROLES)}, got {msg.get('role')!r}")
        if "content" not in msg:
            raise GraderError(f"{where}.content", "is required")
        content = msg["content"]
        parts = content if isinstance(content, list) else [content]
        if not parts:
            raise GraderError(f"{where}.content", "must not be an empty list")
        out.append(
            Message(
                msg["role"],
                tuple(
                    _part(part, f"{where}.content" + (f"[{j}]" if isinstance(content, list) else ""))
                    for j, part in enumerate(parts)
                ),
            )
        )
    return tuple(out)


def _part(part: Any, path: str) -> dict[str, Any]:
    if isinstance(part, str):
        _check_template(part, path)
        return {"type": "input_text", "text": part}
    _require_object(part, path)
    kind = part.get("type")
    if kind not in _PART_FIELDS:
        raise GraderError(
            f"{path}.type", f"unknown content type {kind!r}; expected one of {', '.join(_PART_FIELDS)}"
        )
    for key in part:
        if key != "type" and key not in _PART_FIELDS[kind]:
            raise GraderError(f"{path}.{key}", f"unknown field for {kind}")
    if kind in ("input_text", "output_text"):
        if not isinstance(part.get("text"), str):
            raise GraderError(f"{path}.text", "must be a string")
        _check_template(part["text"], f"{path}.text")
    elif kind == "input_image":
        if not isinstance(part.get("image_url"), str):
            raise GraderError(f"{path}.image_url", "must be a string")
        _check_template(part["image_url"], f"{path}.image_url")
        if part.get("detail", "auto") not in ("auto", "low", "high"):
            raise GraderError(f"{path}.detail", "must be one of auto, low, high")
    else:
        audio = part.get("input_audio")
        if (
            not isinstance(audio, dict)
            or set(audio) != {"data", "format"}
            or not all(isinstance(v, str) for v in audio.values())
        ):
            raise GraderError(f"{path}.input_audio", "must be an object with string fields data and format")
    return dict(part)


def _sampling_params(value: Any, path: str) -> dict[str, Any]:
    _require_object(value, path)
    out = {}
    for key, raw in value.items():
        kind = SAMPLING_PARAMS.get(key)
        if kind is None:
            raise GraderError(
                f"{path}.{key}", f"unknown sampling parameter; allowed: {', '.join(SAMPLING_PARAMS)}"
            )
        if raw is None:
            continue
        if kind is int and (not isinstance(raw, int) or isinstance(raw, bool)):
            raise GraderError(f"{path}.{key}", "must be an integer")
        if kind is float and (not _is_number(raw) or not math.isfinite(raw)):
            raise GraderError(f"{path}.{key}", "must be a number")
        if kind is str and raw not in REASONING_EFFORTS:
            raise GraderError(f"{path}.{key}", f"must be one of {', '.join(REASONING_EFFORTS)}")
        out[key] = float(raw) if kind is float else raw
    if out.get("max_completions_tokens") is not None and out["max_completions_tokens"] < 1:
        raise GraderError(f"{path}.max_completions_tokens", "must be at least 1")
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
