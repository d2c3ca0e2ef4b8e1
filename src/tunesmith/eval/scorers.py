"""Generation scorers: each turns (prediction, reference fields) into a score in [0, 1].

Every scorer is a pure function of strings. Which scorers apply to an example depends only on
the example (a reference answer, ``keywords``, a ``regex``, a JSON schema …), never on the
model, so two models are always scored on the same examples and can be compared pairwise.

Normalisation for ``normalized_exact_match`` and ``token_f1`` follows the SQuAD v1.1 evaluation
script (Rajpurkar et al., 2016): lower-case, drop punctuation, drop the articles a/an/the,
collapse whitespace. ROUGE-L is the LCS-based F-measure of Lin (2004), "ROUGE: A Package for
Automatic Evaluation of Summaries", section 3.1, with beta = 1 — computed by the graders'
``text_similarity`` implementation (:func:`tunesmith.graders.similarity.rouge`, Google's
``rouge-score`` over lower-cased letter/digit tokens), the one owner of ROUGE in tunesmith.

OpenAI graders (``tunesmith eval --grader FILE``) score a whole batch of replies at once (one
sandbox process, one judge call): :func:`grade_replies`, metrics ``grader:<name>``.
"""

from __future__ import annotations

import logging
import re
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import jsontext
from ..errors import ConfigError
from ..graders.similarity import MissingLibrary, rouge
from ..json_schema import require_jsonschema, schema_validator

log = logging.getLogger("tunesmith")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the texts are equal after stripping surrounding whitespace."""
    return float(prediction.strip() == reference.strip())


def normalized_exact_match(prediction: str, reference: str) -> float:
    """1.0 when the texts are equal after :func:`normalize_answer`."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1: harmonic mean of precision and recall of the normalised token bags.

    ``common = |bag(pred) ∩ bag(ref)|``; ``P = common/|pred|``, ``R = common/|ref|``,
    ``F1 = 2PR/(P+R)``. Two empty texts score 1, one empty text scores 0.
    """
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (Lin 2004, eq. 2-4 with beta = 1): ``R = LCS/|ref|``, ``P = LCS/|pred|``,
    ``F = 2PR/(P+R)`` over lower-cased letter/digit tokens; 0 when either text has no token.
    The graders' ``rouge_l`` metric (needs ``rouge-score``; raises MissingLibrary without it)."""
    return rouge(prediction, reference, "rougeL")


def contains_all(prediction: str, keywords: list[str]) -> float:
    """1.0 when every keyword occurs in the prediction (case-insensitive substring)."""
    text = prediction.lower()
    return float(all(str(k).lower() in text for k in keywords))


def regex_match(prediction: str, pattern: str) -> float:
    """1.0 when ``re.search(pattern, prediction)`` finds a match."""
    return float(re.search(pattern, prediction) is not None)


def parse_json(prediction: str) -> tuple[bool, Any]:
    """(is valid JSON, value). The whole reply must be one JSON document (surrounding
    whitespace allowed); prose around it makes it invalid, as a program reading it would see."""
    try:
        return True, jsontext.loads(prediction.strip())
    except ValueError:
        return False, None


def json_valid(prediction: str) -> float:
    return float(parse_json(prediction)[0])


def json_schema_valid(prediction: str, schema: dict) -> float:
    """1.0 when the reply is JSON and validates against ``schema`` (JSON Schema, any draft
    the ``jsonschema`` package knows; the draft is taken from ``$schema``)."""
    ok, value = parse_json(prediction)
    if not ok:
        return 0.0
    require_jsonschema("JSON-schema scoring", "eval")
    return float(schema_validator(schema, "the example's JSON schema").is_valid(value))


# ---- user scorers ---------------------------------------------------------------------------


def load_user_scorer(spec: str) -> Callable[[str, dict], float]:
    """``module:function`` or ``path/to/file.py:function`` -> the function.

    The function is called as ``function(prediction: str, example: dict) -> float`` with the
    example's fields (``reference``, ``keywords`` and any other field of the row) and must return
    a number in [0, 1]. The module is the operator's own code named on the command line; a bare
    module name is imported with the current directory on ``sys.path``.
    """
    from ..usercode import UserCodeError, load_function, split_reference

    if split_reference(spec) is None:
        raise ConfigError(f"scorer '{spec}' must look like module:function or file.py:function")
    try:
        return load_function(spec, cwd_on_path=True)
    except UserCodeError as exc:
        raise ConfigError(f"scorer '{spec}': {exc}") from None


def call_user_scorer(name: str, func: Callable, prediction: str, example: dict) -> float:
    """Call a user scorer and check that it returned a number in [0, 1]."""
    value = func(prediction, example)
    if isinstance(value, bool):
        value = float(value)
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(
            f"scorer '{name}' returned {value!r} for {example.get('source', 'an example')}; "
            "a scorer must return a number in [0, 1]"
        )
    return float(value)


# ---- which scorers apply --------------------------------------------------------------------


@dataclass
class ScoringOptions:
    """Scorers chosen on the command line (per-example fields add to these)."""

    regex: str | None = None
    json_schema: dict | None = None
    check_json: bool = False
    user_scorers: dict[str, Callable] = field(default_factory=dict)
    graders: list[EvalGrader] = field(default_factory=list)
    """OpenAI graders (``--grader``), scored as ``grader:<name>``."""
    judge: Callable | None = None
    """The judge of the graders' score_model / label_model graders (a LocalJudge)."""


# metric name -> (label for reports, higher is better)
GENERATION_METRICS = {
    "exact_match": ("exact match", True),
    "normalized_exact_match": ("normalised exact match", True),
    "token_f1": ("token F1", True),
    "rouge_l": ("ROUGE-L", True),
    "keywords": ("contains all keywords", True),
    "regex": ("regex match", True),
    "json_valid": ("valid JSON", True),
    "json_schema_valid": ("valid against JSON schema", True),
}


def _looks_like_json(reference: str | None) -> bool:
    if not reference or reference.strip()[:1] not in ("{", "["):
        return False
    return parse_json(reference)[0]


def score_prediction(prediction: str, target: dict, options: ScoringOptions) -> dict[str, float]:
    """Every applicable generation metric for one reply.

    ``target`` holds the example's ``reference`` (str or None), optional ``keywords`` (list),
    ``regex`` (str), ``json_schema`` (dict) and the rest of the row's fields (for user scorers).
    JSON validity is scored when asked for (``options.check_json``), when a schema is given, or
    when the reference itself is a JSON object or array.
    """
    out: dict[str, float] = {}
    reference = target.get("reference")
    if isinstance(reference, str):
        out["exact_match"] = exact_match(prediction, reference)
        out["normalized_exact_match"] = normalized_exact_match(prediction, reference)
        out["token_f1"] = token_f1(prediction, reference)
        try:
            out["rouge_l"] = rouge_l(prediction, reference)
        except MissingLibrary as exc:
            _warn_once(f"ROUGE-L is not scored: {exc}")
    keywords = target.get("keywords")
    if keywords:
        out["keywords"] = contains_all(prediction, keywords)
    pattern = target.get("regex") or options.regex
    if pattern:
        out["regex"] = regex_match(prediction, pattern)
    schema = target.get("json_schema") or options.json_schema
    if options.check_json or schema is not None or _looks_like_json(reference):
        out["json_valid"] = json_valid(prediction)
    if schema is not None:
        out["json_schema_valid"] = json_schema_valid(prediction, schema)
    for name, func in options.user_scorers.items():
        out[f"scorer:{name}"] = call_user_scorer(name, func, prediction, target)
    return out


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("eval: %s", message)


# ---- OpenAI graders -------------------------------------------------------------------------


@dataclass
class EvalGrader:
    """A grader scorer: ``name`` (metric ``grader:<name>``) and its parsed definition."""

    name: str
    spec: Any


def load_eval_graders(files: list[str]) -> list[EvalGrader]:
    """``--grader FILE`` (repeatable) -> graders; ConfigError naming the file and field."""
    from ..graders import GraderError, read_grader
    from ..graders.judge import check_text_only

    out: list[EvalGrader] = []
    for file in files:
        try:
            spec, name = read_grader(file, "--grader")
            check_text_only(spec, f"--grader ({file})")
        except GraderError as exc:
            raise ConfigError(f"{exc.path}: {exc.bare_message}") from None
        if name in [g.name for g in out]:
            raise ConfigError(
                f"--grader {file}: another grader is also named {name!r}; give "
                'each a distinct name (a file may hold {"name": …, "grader": …})'
            )
        out.append(EvalGrader(name, spec))
    return out


def grade_replies(
    graders: list[EvalGrader], replies: list[str], items: list[dict], judge: Callable | None = None
) -> dict[str, list]:
    """``{name: [GraderResult per reply]}``: every grader over every reply in one batch
    (``items[k]`` is reply ``k``'s held-out row). A reply the grader cannot grade scores 0
    with ``error`` set, as OpenAI scores a grader error."""
    from ..graders import grade_many

    return {g.name: grade_many(g.spec, replies, items, judge=judge) for g in graders}
