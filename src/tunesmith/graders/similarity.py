"""``text_similarity`` metrics: each maps (input, reference) to a float, higher = more similar.

OpenAI does not publish its exact formulas; each metric here follows the standard definition
through a well-kept library (extra ``graders``: ``nltk``, ``rouge-score``, ``rapidfuzz``):

``fuzzy_match``
    ``rapidfuzz.fuzz.ratio / 100``: the normalised Indel similarity,
    ``2 * LCS_chars(a, b) / (len(a) + len(b))`` over characters (1.0 for two empty strings).
``bleu``
    Sentence BLEU (Papineni et al., 2002) by ``nltk.translate.bleu_score.sentence_bleu``: the
    geometric mean of modified 1..4-gram precisions (weights 1/4 each) times the brevity
    penalty ``exp(1 - r/c)`` when ``c < r``; an n-gram order with no match is smoothed as in
    Chen & Cherry (2014) method 3 (``1 / (2^k * total)`` for the k-th such order; the same as
    sacrebleu's default ``exp`` smoothing), so one missing 4-gram does not zero the score. 0.0
    when no unigram matches.
``gleu``
    Google's sentence GLEU (Wu et al., 2016) by ``nltk``'s ``sentence_gleu``: over all 1..4-grams,
    ``min(matches / hypothesis n-grams, matches / reference n-grams)``.
``meteor``
    METEOR (Banerjee & Lavie, 2005) by ``nltk``'s ``meteor_score`` with its defaults
    (alpha=0.9, beta=3, gamma=0.5; lower-cased): ``Fmean = P*R / (alpha*P + (1-alpha)*R)``
    times ``1 - gamma * (chunks / matches)^beta``, with unigram alignment by the *exact* and
    *Porter-stem* stages only. The WordNet synonym stage is left out on purpose: it needs the
    WordNet corpus, which would have to be downloaded at run time. (OpenAI's number may differ
    where synonyms would have matched.)
``rouge_1`` … ``rouge_5``, ``rouge_l``
    The F-measure (beta = 1) of ROUGE-N and of LCS-based ROUGE-L (Lin, 2004) by Google's
    ``rouge-score`` package without stemming, on its usual tokens (lower-cased runs of letters
    and digits) except that any script's letters count, not only a-z, so non-English text is
    scored instead of tokenising to nothing.
``cosine``
    Cosine similarity of two embeddings from an embedding function the caller supplies
    (``embed(list[str]) -> list[vector]``); there is no built-in embedding model.

BLEU, GLEU and METEOR share one tokeniser: ``nltk``'s ``wordpunct_tokenize`` (runs of word
characters, and runs of other non-space characters), case kept (METEOR lower-cases itself).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from functools import cache

from ..errors import TunesmithError

Embedder = Callable[[list[str]], Sequence[Sequence[float]]]

LIBRARIES = {
    "fuzzy_match": "rapidfuzz",
    "bleu": "nltk",
    "gleu": "nltk",
    "meteor": "nltk",
    "rouge": "rouge-score",
}


class MissingLibrary(TunesmithError):
    """The library a metric needs is not installed."""


def similarity(metric: str, text: str, reference: str, *, embed: Embedder | None = None) -> float:
    """The ``metric`` similarity of ``text`` to ``reference`` (see the module docstring)."""
    if metric == "fuzzy_match":
        return fuzzy_match(text, reference)
    if metric == "bleu":
        return bleu(text, reference)
    if metric == "gleu":
        return gleu(text, reference)
    if metric == "meteor":
        return meteor(text, reference)
    if metric == "rouge_l":
        return rouge(text, reference, "rougeL")
    if metric.startswith("rouge_") and metric[6:] in ("1", "2", "3", "4", "5"):
        return rouge(text, reference, "rouge" + metric[6:])
    if metric == "cosine":
        if embed is None:
            raise TunesmithError("cosine similarity needs an embedding function; none is configured")
        return cosine(text, reference, embed)
    raise TunesmithError(f"unknown similarity metric {metric!r}")


def fuzzy_match(text: str, reference: str) -> float:
    fuzz = _require("rapidfuzz.fuzz", "fuzzy_match")
    return fuzz.ratio(text, reference) / 100.0


def tokenize(text: str) -> list[str]:
    """The BLEU/GLEU/METEOR tokens: ``nltk.tokenize.wordpunct_tokenize``."""
    return _require("nltk.tokenize", "bleu").wordpunct_tokenize(text)


def bleu(text: str, reference: str) -> float:
    bleu_score = _require("nltk.translate.bleu_score", "bleu")
    hyp, ref = tokenize(text), tokenize(reference)
    if not hyp or not ref:
        return 0.0
    smoothing = bleu_score.SmoothingFunction().method3
    return float(
        bleu_score.sentence_bleu([ref], hyp, weights=(0.25, 0.25, 0.25, 0.25), smoothing_function=smoothing)
    )


def gleu(text: str, reference: str) -> float:
    gleu_score = _require("nltk.translate.gleu_score", "gleu")
    hyp, ref = tokenize(text), tokenize(reference)
    if not hyp or not ref:
        return 0.0
    return float(gleu_score.sentence_gleu([ref], hyp, min_len=1, max_len=4))


class _NoSynonyms:
    """Stands in for nltk's WordNet reader: no word has synonyms (see the module docstring)."""

    @staticmethod
    def synsets(word: str) -> list:
        return []


def meteor(text: str, reference: str) -> float:
    meteor_score = _require("nltk.translate.meteor_score", "meteor")
    hyp, ref = tokenize(text), tokenize(reference)
    if not hyp or not ref:
        return 0.0
    return float(meteor_score.single_meteor_score(ref, hyp, wordnet=_NoSynonyms()))


class _UnicodeRougeTokenizer:
    """rouge-score's default tokens (lower-case, split on anything but letters and digits)
    with letters of every script kept; ``[^\\W_]+`` is exactly ``[a-z0-9]+`` on ASCII text."""

    _WORD = re.compile(r"[^\W_]+")

    def tokenize(self, text: str) -> list[str]:
        return self._WORD.findall(text.lower())


@cache
def _rouge_scorer(rouge_type: str):
    rouge_scorer = _require("rouge_score.rouge_scorer", "rouge")
    return rouge_scorer.RougeScorer([rouge_type], use_stemmer=False, tokenizer=_UnicodeRougeTokenizer())


def rouge(text: str, reference: str, rouge_type: str) -> float:
    """F-measure of ``rouge_type`` (``rouge1`` … ``rouge5``, ``rougeL``)."""
    score = _rouge_scorer(rouge_type).score(reference, text)[rouge_type]
    return float(score.fmeasure)


def cosine(text: str, reference: str, embed: Embedder) -> float:
    vectors = embed([text, reference])
    if len(vectors) != 2:
        raise TunesmithError(f"the embedding function returned {len(vectors)} vectors for 2 texts")
    a, b = (list(map(float, v)) for v in vectors)
    if len(a) != len(b) or not a:
        raise TunesmithError("the embedding function returned vectors of different or zero length")
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    if norm == 0.0:
        return 0.0
    return sum(x * y for x, y in zip(a, b)) / norm


def _require(module: str, metric: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        package = LIBRARIES.get(metric, module.split(".")[0])
        raise MissingLibrary(
            f"the {metric} metric needs the {package!r} package: pip install "
            f"'tunesmith[graders]' (or pip install {package})"
        ) from None
