"""Parsing grader definitions: OpenAI's shapes in, typed objects out, errors name the field."""

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.graders import GraderError, parse_grader
from tunesmith.graders.spec import LabelModel, Multi, Python, ScoreModel, StringCheck, TextSimilarity

STRING_CHECK = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}
SIMILARITY = {
    "type": "text_similarity",
    "name": "sim",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "evaluation_metric": "bleu",
}
PYTHON = {"type": "python", "name": "py", "source": "def grade(sample, item):\n    return 1.0\n"}
SCORE_MODEL = {
    "type": "score_model",
    "name": "judge",
    "model": "gpt-4o-mini",
    "input": [
        {"role": "system", "content": "Score 0-10."},
        {"role": "user", "content": [{"type": "input_text", "text": "{{sample.output_text}}"}]},
    ],
    "range": [0, 10],
    "sampling_params": {"temperature": 0, "seed": 1},
}
LABEL_MODEL = {
    "type": "label_model",
    "name": "lab",
    "model": "m",
    "input": [{"type": "message", "role": "user", "content": "{{sample.output_text}}"}],
    "labels": ["good", "bad"],
    "passing_labels": ["good"],
}


def multi(**graders):
    return {"type": "multi", "name": "m", "graders": graders, "calculate_output": " + ".join(graders) or "1"}


def test_each_type_parses_into_its_typed_object():
    assert parse_grader(STRING_CHECK) == StringCheck(
        "exact", "{{sample.output_text}}", "{{item.answer}}", "eq"
    )
    assert isinstance(parse_grader(SIMILARITY), TextSimilarity)
    assert isinstance(parse_grader(PYTHON), Python)
    score = parse_grader(SCORE_MODEL)
    assert isinstance(score, ScoreModel) and score.range == (0.0, 10.0)
    assert score.sampling_params == {"temperature": 0.0, "seed": 1}
    assert score.input[0].content == ({"type": "input_text", "text": "Score 0-10."},)
    label = parse_grader(LABEL_MODEL)
    assert isinstance(label, LabelModel) and label.passing_labels == ("good",)
    combined = parse_grader(multi(acc=STRING_CHECK, sim=SIMILARITY))
    assert isinstance(combined, Multi) and set(combined.graders) == {"acc", "sim"}
    no_range = {k: v for k, v in SCORE_MODEL.items() if k != "range"}
    assert parse_grader(no_range).range == (0.0, 1.0)  # OpenAI's default


def test_the_sdk_single_grader_form_of_multi_is_named_by_the_sub_graders_name():
    parsed = parse_grader(
        {"type": "multi", "name": "m", "graders": STRING_CHECK, "calculate_output": "exact * 2"}
    )
    assert set(parsed.graders) == {"exact"}


def test_grader_error_is_a_tunesmith_error_with_the_path():
    with pytest.raises(GraderError) as exc:
        parse_grader(dict(STRING_CHECK, operation="regex"))
    assert isinstance(exc.value, TunesmithError)
    assert exc.value.path == "grader.operation"


@pytest.mark.parametrize(
    "grader, path, fragment",
    [
        ([], "grader", "must be a JSON object"),
        ({"type": "regex"}, "grader.type", "unknown grader type 'regex'"),
        ({**STRING_CHECK, "extra": 1}, "grader.extra", "unknown field"),
        ({k: v for k, v in STRING_CHECK.items() if k != "reference"}, "grader.reference", "required"),
        ({**STRING_CHECK, "operation": "contains"}, "grader.operation", "unknown operation"),
        ({**STRING_CHECK, "name": ""}, "grader.name", "non-empty"),
        ({**STRING_CHECK, "input": 5}, "grader.input", "must be a string"),
        ({**SIMILARITY, "evaluation_metric": "rouge_6"}, "grader.evaluation_metric", "unknown metric"),
        ({**PYTHON, "source": ""}, "grader.source", "non-empty"),
        ({**PYTHON, "source": "x" * (256 * 1024 + 1)}, "grader.source", "the limit is 262144"),
        ({**SCORE_MODEL, "range": [1, 0]}, "grader.range", "low < high"),
        ({**SCORE_MODEL, "range": [0, 1, 2]}, "grader.range", "two finite numbers"),
        (
            {**SCORE_MODEL, "sampling_params": {"temprature": 1}},
            "grader.sampling_params.temprature",
            "unknown sampling parameter",
        ),
        ({**SCORE_MODEL, "sampling_params": {"seed": 1.5}}, "grader.sampling_params.seed", "integer"),
        ({**SCORE_MODEL, "input": []}, "grader.input", "non-empty list"),
        (
            {**SCORE_MODEL, "input": [{"role": "robot", "content": "x"}]},
            "grader.input[0].role",
            "must be one of",
        ),
        (
            {
                **SCORE_MODEL,
                "input": [{"role": "user", "content": [{"type": "input_text", "text": "{{item}}"}]}],
            },
            "grader.input[0].content[0].text",
            "whole namespace",
        ),
        (
            {**SCORE_MODEL, "input": [{"role": "user", "content": [{"type": "video"}]}]},
            "grader.input[0].content[0].type",
            "unknown content type",
        ),
        ({**LABEL_MODEL, "passing_labels": ["great"]}, "grader.passing_labels", "not among labels"),
        ({**LABEL_MODEL, "labels": ["a", "a"]}, "grader.labels", "duplicate"),
        (
            multi(acc={**STRING_CHECK, "operation": "regex"}),
            "grader.graders.acc.operation",
            "unknown operation 'regex'",
        ),
        (multi(acc={**STRING_CHECK, "inputt": "x"}), "grader.graders.acc.inputt", "unknown field"),
        (multi(), "grader.graders", "at least one"),
        (
            {"type": "multi", "name": "m", "graders": {"my-grader": STRING_CHECK}, "calculate_output": "1"},
            "grader.graders.my-grader",
            "identifier",
        ),
        (
            {"type": "multi", "name": "m", "graders": {"min": STRING_CHECK}, "calculate_output": "1"},
            "grader.graders.min",
            "function name",
        ),
        (multi(inner=multi(acc=STRING_CHECK)), "grader.graders.inner.type", "cannot itself be multi"),
        (
            {**multi(acc=STRING_CHECK), "calculate_output": "acc + sim"},
            "grader.calculate_output",
            "unknown name 'sim'",
        ),
        (
            {**multi(acc=STRING_CHECK), "calculate_output": "__import__('os')"},
            "grader.calculate_output",
            "not allowed",
        ),
    ],
)
def test_invalid_definitions_name_the_field_path(grader, path, fragment):
    with pytest.raises(GraderError) as exc:
        parse_grader(grader)
    assert exc.value.path == path
    assert str(exc.value).startswith(path + ": ")
    assert fragment in str(exc.value)
