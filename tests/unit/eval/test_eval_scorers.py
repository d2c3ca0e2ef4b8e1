"""Generation scorers, with expected values worked out by hand."""

from __future__ import annotations

import pytest

from tunesmith.errors import ConfigError
from tunesmith.eval import scorers as S
from tunesmith.graders.similarity import similarity


def test_normalisation_follows_squad():
    # lower-case, punctuation dropped, articles a/an/the dropped, whitespace collapsed
    assert S.normalize_answer("The  Cat, sat on A mat!") == "cat sat on mat"


def test_exact_and_normalised_exact_match():
    assert S.exact_match(" the apple is red. ", "the apple is red.") == 1.0
    assert S.exact_match("The apple is red", "the apple is red.") == 0.0
    assert S.normalized_exact_match("The apple is red", "the apple is red.") == 1.0
    assert S.normalized_exact_match("apple is green", "the apple is red.") == 0.0


def test_token_f1_by_hand():
    # pred "the cat sat on the mat" -> normalised tokens [cat, sat, on, mat] (4)
    # ref  "a cat on a hat"         -> normalised tokens [cat, on, hat] (3)
    # common bag = {cat, on} = 2; P = 2/4 = 0.5, R = 2/3; F1 = 2*0.5*(2/3)/(0.5+2/3) = (2/3)/(7/6) = 4/7
    assert S.token_f1("the cat sat on the mat", "a cat on a hat") == pytest.approx(4 / 7)
    # repeated tokens count with multiplicity: pred [x, x, y], ref [x, y, y] -> common = 1 x + 1 y = 2
    # P = 2/3, R = 2/3, F1 = 2/3
    assert S.token_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert S.token_f1("", "") == 1.0 and S.token_f1("word", "") == 0.0
    assert S.token_f1("red", "blue") == 0.0


def test_rouge_l_by_hand():
    # ROUGE-L is the graders' text_similarity rouge_l (one owner: graders/similarity.py, by
    # rouge-score); eval's numbers are unchanged on these examples, worked by hand:
    # pred "the cat sat on the mat" (6 tokens), ref "the cat is on the mat" (6 tokens)
    # LCS = the cat on the mat = 5; P = R = 5/6; F = 5/6
    assert S.rouge_l("The cat sat on the mat.", "the cat is on the mat") == pytest.approx(5 / 6)
    # Lin's example: ref "police killed the gunman", pred "the gunman kill police":
    # LCS = "the gunman" = 2; P = 2/4, R = 2/4, F = 0.5
    assert S.rouge_l("the gunman kill police", "police killed the gunman") == pytest.approx(0.5)
    # unequal lengths: pred "a b" (2), ref "a b c d" (4): LCS 2, P = 1, R = 0.5, F = 2*0.5/1.5 = 2/3
    assert S.rouge_l("a b", "a b c d") == pytest.approx(2 / 3)
    assert S.rouge_l("a b", "a b c d") == similarity("rouge_l", "a b", "a b c d")
    # Where the old hand-written version differed (it is gone): "_" no longer joins words
    # ("snake_case" is snake + case: LCS 2 of 2 and 2 -> 1.0), and a text with no token scores
    # 0 even against another empty text (rouge-score's rule; the old code gave 1.0).
    assert S.rouge_l("snake case", "snake_case") == pytest.approx(1.0)
    assert S.rouge_l("", "") == 0.0 and S.rouge_l("...", "word") == 0.0


def test_keywords_regex_json():
    assert S.contains_all("A 27-Month warranty", ["27", "month"]) == 1.0
    assert S.contains_all("A 27-year warranty", ["27", "month"]) == 0.0
    assert S.regex_match("order BW-K2-230 now", r"BW-K\d-\d{3}") == 1.0
    assert S.regex_match("no code", r"BW-K\d") == 0.0
    assert S.json_valid(' {"a": 1} ') == 1.0
    assert S.json_valid('Sure! {"a": 1}') == 0.0
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert S.json_schema_valid('{"a": 1}', schema) == 1.0
    assert S.json_schema_valid('{"a": "x"}', schema) == 0.0
    assert S.json_schema_valid("not json", schema) == 0.0
    with pytest.raises(ConfigError, match="not a valid JSON schema"):
        S.json_schema_valid("{}", {"type": 12})


def test_score_prediction_applies_what_the_example_asks_for():
    opts = S.ScoringOptions()
    only_keywords = S.score_prediction("it is 27 months", {"reference": None, "keywords": ["27"]}, opts)
    assert only_keywords == {"keywords": 1.0}
    with_ref = S.score_prediction('{"k": 2}', {"reference": '{"k": 1}'}, opts)
    # a JSON reference turns on JSON validity; EM fails, normalised EM ignores punctuation: "k 2" vs "k 1"
    assert with_ref["json_valid"] == 1.0 and with_ref["exact_match"] == 0.0
    assert with_ref["normalized_exact_match"] == 0.0 and with_ref["token_f1"] == pytest.approx(0.5)
    regex = S.score_prediction("abc", {"reference": "abc"}, S.ScoringOptions(regex="^a"))
    assert regex["regex"] == 1.0 and regex["exact_match"] == 1.0 and "json_valid" not in regex


def test_user_scorer_from_file_and_module(tmp_path, monkeypatch):
    f = tmp_path / "my_scores.py"
    f.write_text(
        "def first_word(prediction, example):\n"
        "    return float(prediction.split()[:1] == example['reference'].split()[:1])\n"
        "def bad(prediction, example):\n    return 3\n"
    )
    func = S.load_user_scorer(f"{f}:first_word")
    opts = S.ScoringOptions(user_scorers={"first_word": func})
    assert S.score_prediction("red sky", {"reference": "red apple"}, opts)["scorer:first_word"] == 1.0
    monkeypatch.chdir(tmp_path)
    assert S.load_user_scorer("my_scores:first_word")("x", {"reference": "y"}) == 0.0
    bad = S.load_user_scorer("my_scores:bad")
    with pytest.raises(ConfigError, match=r"must return a number in \[0, 1\]"):
        S.call_user_scorer("bad", bad, "x", {"source": "f:1"})
    with pytest.raises(ConfigError, match="no function 'missing'"):
        S.load_user_scorer("my_scores:missing")
    with pytest.raises(ConfigError, match="module:function"):
        S.load_user_scorer("no_colon")
    with pytest.raises(ConfigError, match="could not load"):
        S.load_user_scorer("tunesmith_no_such_module_xyz:f")
