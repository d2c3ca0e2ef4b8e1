"""Built-in verifiable rewards: exact match, regex / format match, JSON-schema validity, length.

Each maker takes a ``GrpoRewardConfig`` and the spec's config path (for errors) and returns
``score_fn(samples) -> list[float]``.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from .. import jsontext
from ..errors import ConfigError, TunesmithError
from ..json_schema import read_schema_file, require_jsonschema, schema_validator
from . import Sample


def _normalise(text: str, ignore_case: bool) -> str:
    """Whitespace-collapsed, stripped (and case-folded) text, so "  42 " equals "42"."""
    text = " ".join(text.split())
    return text.casefold() if ignore_case else text


def _compile(pattern: str, flags: int, where: str) -> re.Pattern:
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise ConfigError(f"config: '{where}.pattern' is not a valid regular expression: {exc}") from None


def exact_match(spec, where: str):
    """1.0 when the answer equals the example's reference field (default ``answer``), else 0.0.

    The answer is the whole completion, or with ``pattern`` the first match's group 1 (the whole
    match when the pattern has no group; no match scores 0). Both sides are compared with
    whitespace collapsed (with ``ignore_case``, case-folded, and the pattern matched
    case-insensitively). A reference may be a string, a
    number, or a list of acceptable answers.
    """
    key = spec.field or "answer"
    flags = re.DOTALL | (re.IGNORECASE if spec.ignore_case else 0)
    extract = _compile(spec.pattern, flags, where) if spec.pattern else None

    def score(samples: list[Sample]) -> list[float]:
        out = []
        for s in samples:
            answer = s.completion
            if extract is not None:
                m = extract.search(answer)
                if m is None:
                    out.append(0.0)
                    continue
                answer = m.group(1) if m.re.groups else m.group(0)
            refs = s.extra[key]
            refs = refs if isinstance(refs, list) else [refs]
            got = _normalise(answer or "", spec.ignore_case)
            out.append(float(any(got == _normalise(str(r), spec.ignore_case) for r in refs)))
        return out

    return score


def regex(spec, where: str):
    """1.0 when ``pattern`` matches the completion (``re.search``; with ``full_match`` the whole
    stripped completion must match), else 0.0. Compiled with ``re.DOTALL`` so ``.`` spans lines."""
    flags = re.DOTALL | (re.IGNORECASE if spec.ignore_case else 0)
    pattern = _compile(spec.pattern, flags, where)

    def score(samples: list[Sample]) -> list[float]:
        if spec.full_match:
            return [float(pattern.fullmatch(s.completion.strip()) is not None) for s in samples]
        return [float(pattern.search(s.completion) is not None) for s in samples]

    return score


_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n(.*?)\n?```$", re.DOTALL)


def parse_json_completion(text: str):
    """The JSON value in a completion (a single ```json fenced block is unwrapped); raises
    ``ValueError`` when it is not JSON."""
    text = text.strip()
    m = _FENCE.match(text)
    if m:
        text = m.group(1).strip()
    return jsontext.loads(text)


def _load_schema(value, where: str) -> dict:
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise ConfigError(f"config: '{where}.schema' must be a JSON-schema file or a mapping")
    schema = read_schema_file(value, f"config: '{where}.schema'")
    if not isinstance(schema, dict):
        raise ConfigError(f"config: '{where}.schema': {value} must hold a JSON object")
    return schema


def json_schema(spec, where: str):
    """1.0 when the completion parses as JSON and validates against the schema, else 0.0.

    The schema is ``schema`` (a file or an inline mapping) or, with ``field``, the example's own
    schema in that field (an object, or a string holding one). With neither, any JSON value
    scores 1. Needs the ``jsonschema`` package when a schema is used.
    """
    fixed = None
    if spec.schema is not None and spec.field:
        raise ConfigError(f"config: '{where}': give either 'schema' or 'field', not both")
    if spec.schema is not None or spec.field:
        require_jsonschema(f"config: '{where}' validates against a schema, which", "grpo")
    if spec.schema is not None:
        fixed = schema_validator(_load_schema(spec.schema, where), f"config: '{where}.schema'")

    @lru_cache(maxsize=256)
    def per_example(text: str):
        try:
            return schema_validator(jsontext.loads(text), f"the schema in example field '{spec.field}'")
        except ConfigError as exc:
            raise TunesmithError(str(exc)) from None

    def score(samples: list[Sample]) -> list[float]:
        out = []
        for s in samples:
            validator = fixed
            if spec.field:
                raw = s.extra[spec.field]
                validator = per_example(raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True))
            try:
                value = parse_json_completion(s.completion)
            except ValueError:
                out.append(0.0)
                continue
            out.append(float(validator is None or validator.is_valid(value)))
        return out

    return score


def overlong_penalty(n_tokens: int, max_tokens: int, cache_tokens: int) -> float:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), in [-1, 0].

    With ``L_max = max_tokens`` and ``L_cache = cache_tokens``: 0 for ``L <= L_max − L_cache``,
    ``((L_max − L_cache) − L) / L_cache`` inside the cache interval, −1 beyond ``L_max``.
    """
    free = max_tokens - cache_tokens
    if n_tokens <= free:
        return 0.0
    if n_tokens <= max_tokens:
        return (free - n_tokens) / cache_tokens
    return -1.0


def length(spec, where: str, *, max_new_tokens: int):
    """Length penalty on the sampled token count: :func:`overlong_penalty`."""
    max_tokens = spec.max_tokens or max_new_tokens
    cache = spec.cache_tokens if spec.cache_tokens is not None else max(1, max_tokens // 4)
    if max_tokens < 1 or not 1 <= cache <= max_tokens:
        raise ConfigError(
            f"config: '{where}': need max_tokens >= 1 and 1 <= cache_tokens <= max_tokens "
            f"(got {max_tokens}, {cache})"
        )

    def score(samples: list[Sample]) -> list[float]:
        return [overlong_penalty(s.n_tokens, max_tokens, cache) for s in samples]

    return score
