"""text_similarity metrics on small worked examples, every expected number derived by hand.

Running example (E1): input "the cat sat on the mat", reference "the cat is on the mat",
6 tokens each.
  1-grams: input {the:2, cat, sat, on, mat}, reference {the:2, cat, is, on, mat};
           clipped matches the 2 + cat + on + mat = 5           -> p1 = 5/6
  2-grams: input the·cat cat·sat sat·on on·the the·mat (5); matches the·cat on·the the·mat
                                                                -> p2 = 3/5
  3-grams: input the·cat·sat cat·sat·on sat·on·the on·the·mat (4); match on·the·mat
                                                                -> p3 = 1/4
  4-grams: input the·cat·sat·on cat·sat·on·the sat·on·the·mat (3); no match -> p4 = 0/3
Example E2: input "the cat sat on" (4 tokens), reference "the cat sat on the mat" (6): every
input n-gram matches (p1..p4 = 4/4, 3/3, 2/2, 1/1); the reference has 6, 5, 4, 3 n-grams.
"""

import math

import pytest

from tunesmith.graders import GraderError, grade
from tunesmith.graders.similarity import similarity

E1 = ("the cat sat on the mat", "the cat is on the mat")
E2 = ("the cat sat on", "the cat sat on the mat")


def sim(metric, pair):
    return similarity(metric, *pair)


def test_bleu_e1_smooths_the_missing_4gram_precision():
    # p4 = 0 is smoothed (Chen & Cherry method 3, first zero order): 1 / (2^1 * 3) = 1/6.
    # Brevity penalty 1 (c = r = 6). BLEU = (5/6 * 3/5 * 1/4 * 1/6)^(1/4) = (1/48)^(1/4).
    assert sim("bleu", E1) == pytest.approx((1 / 48) ** 0.25, rel=1e-9)  # 0.379918


def test_bleu_e2_applies_the_brevity_penalty():
    # All precisions 1; c = 4 < r = 6, so BP = exp(1 - 6/4) = exp(-0.5).
    assert sim("bleu", E2) == pytest.approx(math.exp(-0.5), rel=1e-9)  # 0.606531


def test_bleu_is_zero_without_a_unigram_match_and_one_for_identical_text():
    assert sim("bleu", ("dogs bark loudly", "the cat sat")) == 0.0
    assert sim("bleu", ("the cat sat on the mat", "the cat sat on the mat")) == pytest.approx(1.0)
    assert sim("bleu", ("", "the cat")) == 0.0


def test_gleu_e1_is_min_of_ngram_precision_and_recall():
    # All 1..4-grams: input 6+5+4+3 = 18, reference 18, matches 5+3+1+0 = 9 -> min(9/18, 9/18).
    assert sim("gleu", E1) == pytest.approx(0.5)


def test_gleu_e2_is_limited_by_recall():
    # input n-grams 4+3+2+1 = 10, all matching; reference 6+5+4+3 = 18 -> min(10/10, 10/18).
    assert sim("gleu", E2) == pytest.approx(10 / 18)


def test_meteor_e1_exact_matches_and_fragmentation_penalty():
    # Exact alignment: the-the, cat-cat, on-on, the-the, mat-mat: m = 5; P = R = 5/6.
    # Fmean = P*R / (0.9 P + 0.1 R) = 5/6. Chunks: (the cat) (on the mat) = 2.
    # Penalty = 0.5 * (2/5)^3 = 0.032. METEOR = 5/6 * (1 - 0.032) = 0.806667.
    assert sim("meteor", E1) == pytest.approx(5 / 6 * (1 - 0.5 * 0.4**3))


def test_meteor_matches_porter_stems():
    # "Cats running" / "cat runs": lower-cased, no exact match; Porter stems cat=cat, run=run.
    # m = 2, P = R = 1, Fmean = 1; one chunk: penalty 0.5 * (1/2)^3 = 0.0625 -> 0.9375.
    assert sim("meteor", ("Cats running", "cat runs")) == pytest.approx(0.9375)


def test_meteor_has_no_wordnet_synonym_stage():
    # "big dog" / "large dog": only dog matches (big~large would need WordNet).
    # m = 1, P = R = 1/2, Fmean = 1/2; one chunk of one match: penalty 0.5 * (1/1)^3 = 0.5.
    # METEOR = 0.5 * 0.5 = 0.25.
    assert sim("meteor", ("big dog", "large dog")) == pytest.approx(0.25)


@pytest.mark.parametrize(
    "metric, expected",
    [
        # E1: ROUGE-1 overlap 5 of 6 both ways -> F = 5/6; ROUGE-2 3 of 5 -> 3/5;
        # ROUGE-L: LCS "the cat on the mat" = 5 -> P = R = 5/6.
        ("rouge_1", 5 / 6),
        ("rouge_2", 3 / 5),
        ("rouge_3", 1 / 4),
        ("rouge_4", 0.0),
        ("rouge_l", 5 / 6),
    ],
)
def test_rouge_e1(metric, expected):
    assert sim(metric, E1) == pytest.approx(expected)


@pytest.mark.parametrize(
    "metric, expected",
    [
        # E2: F = 2PR/(P+R). ROUGE-1: P = 4/4, R = 4/6 -> 0.8. ROUGE-2: P = 1, R = 3/5 -> 0.75.
        # ROUGE-3: P = 1, R = 2/4 -> 2/3. ROUGE-4: P = 1, R = 1/3 -> 0.5.
        # ROUGE-5: the input has no 5-gram -> 0. ROUGE-L: LCS 4 -> same as ROUGE-1, 0.8.
        ("rouge_1", 0.8),
        ("rouge_2", 0.75),
        ("rouge_3", 2 / 3),
        ("rouge_4", 0.5),
        ("rouge_5", 0.0),
        ("rouge_l", 0.8),
    ],
)
def test_rouge_e2(metric, expected):
    assert sim(metric, E2) == pytest.approx(expected)


def test_rouge_lower_cases_drops_punctuation_and_keeps_non_latin_letters():
    assert sim("rouge_1", ("The CAT, sat!", "the cat sat")) == pytest.approx(1.0)
    # Greek: input [γάτα], reference [γάτα, σκύλος] -> P = 1, R = 1/2 -> F = 2/3. (rouge-score's
    # default a-z0-9 tokeniser would find no tokens here at all.)
    assert sim("rouge_1", ("γάτα", "γάτα σκύλος")) == pytest.approx(2 / 3)


def test_fuzzy_match_is_normalised_indel_similarity():
    # kitten / sitting: longest common subsequence "ittn" = 4 characters;
    # 2 * 4 / (6 + 7) = 8/13.
    assert sim("fuzzy_match", ("kitten", "sitting")) == pytest.approx(8 / 13)
    assert sim("fuzzy_match", ("abc", "abc")) == 1.0
    assert sim("fuzzy_match", ("abc", "xyz")) == 0.0


def test_cosine_uses_the_injected_embedding_function():
    vectors = {"a": [1.0, 0.0], "b": [1.0, 1.0], "z": [0.0, 0.0]}

    def embed(texts):
        return [vectors[t] for t in texts]

    # [1,0]·[1,1] = 1; |[1,0]| = 1, |[1,1]| = sqrt(2) -> 1/sqrt(2).
    assert similarity("cosine", "a", "b", embed=embed) == pytest.approx(1 / math.sqrt(2))
    assert similarity("cosine", "a", "z", embed=embed) == 0.0
    spec = {
        "type": "text_similarity",
        "name": "c",
        "input": "a",
        "reference": "b",
        "evaluation_metric": "cosine",
    }
    assert grade(spec, "x", {}, embed=embed).score == pytest.approx(1 / math.sqrt(2))


def test_cosine_without_an_embedding_function_is_a_grader_error():
    spec = {
        "type": "text_similarity",
        "name": "c",
        "input": "{{sample.output_text}}",
        "reference": "x",
        "evaluation_metric": "cosine",
    }
    with pytest.raises(GraderError) as exc:
        grade(spec, "x", {})
    assert exc.value.path == "grader.evaluation_metric"
    assert "embedding function" in str(exc.value)


def test_a_failing_embedding_function_is_a_per_sample_error():
    def embed(texts):
        raise RuntimeError("embedding service down")

    spec = {
        "type": "text_similarity",
        "name": "c",
        "input": "a",
        "reference": "b",
        "evaluation_metric": "cosine",
    }
    result = grade(spec, "x", {}, embed=embed)
    assert result.score == 0.0 and "embedding service down" in result.error
    assert result.metadata["errors"]["other_error"] is True
