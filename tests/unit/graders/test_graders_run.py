"""grade / grade_many: string_check, samples, multi graders and the OpenAI response shape."""

import pytest
from openai.types.fine_tuning.alpha import GraderRunResponse

from tunesmith.graders import GraderError, JudgeReply, grade, grade_many, make_sample


def string_check(operation, reference="{{item.answer}}"):
    return {
        "type": "string_check",
        "name": operation,
        "input": "{{sample.output_text}}",
        "reference": reference,
        "operation": operation,
    }


@pytest.mark.parametrize(
    "operation, output, answer, expected",
    [
        ("eq", "Paris", "Paris", 1.0),
        ("eq", "Paris", "paris", 0.0),  # case-sensitive
        ("eq", "Paris ", "Paris", 0.0),  # no trimming
        ("ne", "Paris", "London", 1.0),
        ("ne", "Paris", "Paris", 0.0),
        ("like", "The capital is Paris.", "Paris", 1.0),  # reference is a substring of input
        ("like", "The capital is PARIS.", "Paris", 0.0),  # case-sensitive
        ("like", "Paris", "The capital is Paris.", 0.0),  # not the other way round
        ("ilike", "The capital is PARIS.", "paris", 1.0),
        ("ilike", "Straße", "STRASSE", 1.0),  # Unicode case folding
        ("ilike", "Lyon", "paris", 0.0),
    ],
)
def test_string_check_operations(operation, output, answer, expected):
    assert grade(string_check(operation), output, {"answer": answer}).score == expected


def test_make_sample_fills_openai_sample_namespace():
    assert make_sample('{"answer": 4}') == {
        "output_text": '{"answer": 4}',
        "output_json": {"answer": 4},
        "output_tools": [],
        "choices": [],
    }
    assert make_sample("not json")["output_json"] is None
    assert make_sample("NaN")["output_json"] is None  # not JSON
    given = make_sample({"output_text": "x", "choices": [{"index": 0}]})
    assert given["choices"] == [{"index": 0}] and given["output_json"] is None


def test_output_json_fields_are_template_variables():
    spec = string_check("eq", "{{sample.output_json.answer}}")
    spec["input"] = "{{item.answer}}"
    assert grade(spec, '{"answer": "4"}', {"answer": "4"}).score == 1.0
    missing = grade(spec, "four", {"answer": "4"})
    assert missing.score == 0.0
    assert missing.metadata["errors"]["invalid_variable_error"] is True
    assert "sample.output_json is null" in missing.error


def test_a_bad_sample_is_a_sample_parse_error_for_that_sample_only():
    results = grade_many(string_check("eq"), ["a", 42, {"text": "x"}], [{"answer": "a"}, {}, {}])
    assert results[0].score == 1.0
    for bad in results[1:]:
        assert bad.score == 0.0 and bad.metadata["errors"]["sample_parse_error"] is True


def test_mismatched_lengths_are_a_grader_error():
    with pytest.raises(GraderError):
        grade_many(string_check("eq"), ["a", "b"], [{}])


MULTI = {
    "type": "multi",
    "name": "combined",
    "graders": {
        "exact": {
            "type": "string_check",
            "name": "exact",
            "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}",
            "operation": "eq",
        },
        "overlap": {
            "type": "text_similarity",
            "name": "overlap",
            "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}",
            "evaluation_metric": "rouge_1",
        },
        "judge": {
            "type": "score_model",
            "name": "judge",
            "model": "j",
            "input": [{"role": "user", "content": "{{sample.output_text}}"}],
            "range": [0, 10],
        },
    },
    "calculate_output": "0.5 * exact + 0.3 * overlap + 0.2 * judge / 10",
}


def test_multi_combines_sub_scores_with_its_formula():
    judge = lambda requests, params: [JudgeReply("5", 3, 1) for _ in requests]  # noqa: E731
    results = grade_many(
        MULTI,
        ["the cat sat on", "the cat sat on the mat"],
        [{"answer": "the cat sat on the mat"}] * 2,
        judge=judge,
    )
    # Sample 1: exact 0; ROUGE-1 F of 4-of-4 vs 4-of-6 tokens = 0.8; judge 5.
    #   0.5*0 + 0.3*0.8 + 0.2*5/10 = 0.24 + 0.1 = 0.34.
    # Sample 2: exact 1, ROUGE-1 1, judge 5: 0.5 + 0.3 + 0.1 = 0.9.
    assert results[0].score == pytest.approx(0.34)
    assert results[1].score == pytest.approx(0.9)
    assert results[0].sub_scores == pytest.approx({"exact": 0.0, "overlap": 0.8, "judge": 5.0})
    assert results[0].metadata["scores"] == results[0].sub_scores
    assert results[0].token_usage_per_model == {
        "j": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    }


def test_multi_with_a_failing_sub_grader_scores_zero_and_says_which():
    judge = lambda requests, params: ["no idea" for _ in requests]  # noqa: E731
    result = grade(MULTI, "the cat", {"answer": "the cat"}, judge=judge)
    assert result.score == 0.0
    assert result.error.startswith("judge: ")
    assert result.metadata["errors"]["model_grader_parse_error"] is True
    assert result.sub_scores["exact"] == 1.0


def test_multi_formula_without_a_value_is_a_per_sample_error():
    spec = {"type": "multi", "name": "m", "calculate_output": "1 / a", "graders": {"a": string_check("eq")}}
    result = grade(spec, "x", {"answer": "y"})
    assert result.score == 0.0 and "division by zero" in result.error
    assert result.metadata["errors"]["other_error"] is True


def test_results_match_the_openai_sdk_graders_run_response():
    judge = lambda requests, params: [JudgeReply("5", 3, 1) for _ in requests]  # noqa: E731
    for result in (
        grade(MULTI, "the cat", {"answer": "the cat"}, judge=judge),
        grade(string_check("eq"), "x", {}),
    ):  # the second fails: no item.answer
        body = result.to_openai()
        parsed = GraderRunResponse.model_validate(body)
        assert parsed.reward == result.score
        assert parsed.metadata.errors.invalid_variable_error == (result.error is not None)
        assert set(body["metadata"]["errors"]) == {
            field.alias or name for name, field in type(parsed.metadata.errors).model_fields.items()
        }
