"""The template language: what {{ … }} may name, how values are inserted, what fails."""

import pytest

from tunesmith.graders import GraderError, parse_grader
from tunesmith.graders.template import TemplateSyntaxError, TemplateVariableError, parse_variable, render

SAMPLE = {
    "output_text": "Paris",
    "output_json": {"answer": "Paris", "n": 3, "ok": True, "list": [1, 2]},
    "output_tools": [],
    "choices": [],
}
ITEM = {
    "answer": "paris",
    "nested": {"a": {"b": "deep"}},
    "choices": [{"text": "x"}, {"text": "y"}],
    "odd key.with dot": "odd",
    "none": None,
    "num": 2.5,
}


def r(template):
    return render(template, sample=SAMPLE, item=ITEM)


def test_item_and_sample_variables_with_nesting_indexes_and_quoted_keys():
    assert r("{{item.answer}}") == "paris"
    assert r("{{ sample.output_text }} vs {{item.answer}}") == "Paris vs paris"
    assert r("{{item.nested.a.b}}") == "deep"
    assert r("{{item.choices[1].text}}") == "y"
    assert r('{{item["odd key.with dot"]}}') == "odd"
    assert r("{{sample.output_json.answer}}") == "Paris"


def test_non_string_values_are_inserted_as_compact_json():
    assert r("{{sample.output_json.n}}") == "3"
    assert r("{{sample.output_json.ok}}") == "true"
    assert r("{{item.none}}") == "null"
    assert r("{{item.num}}") == "2.5"
    assert r("{{sample.output_json.list}}") == "[1,2]"
    assert r("{{item.nested.a}}") == '{"b":"deep"}'


def test_substitution_is_one_pass_model_output_is_never_expanded():
    sample = dict(SAMPLE, output_text="{{item.answer}}")
    assert render("got {{sample.output_text}}", sample=sample, item=ITEM) == "got {{item.answer}}"


def test_text_without_complete_braces_is_literal():
    assert r("a { b } {{ c") == "a { b } {{ c"


@pytest.mark.parametrize(
    "template, message",
    [
        ("{{item.missing}}", "item has no key 'missing'"),
        ("{{item.choices[5].text}}", "item.choices has 2 element(s), no index 5"),
        ("{{item.answer.x}}", "item.answer is a string, not an object"),
        ("{{sample.output_json.list.x}}", "sample.output_json.list is a list, not an object"),
    ],
)
def test_missing_variables_are_errors_naming_the_variable(template, message):
    with pytest.raises(TemplateVariableError) as exc:
        r(template)
    assert message in str(exc.value)
    assert template in str(exc.value)


@pytest.mark.parametrize(
    "inside", ["item", "foo.bar", "item..x", "item.a(1)", "__import__('os')", "sample.output_text|upper", ""]
)
def test_invalid_variables_are_syntax_errors(inside):
    with pytest.raises(TemplateSyntaxError):
        parse_variable(inside)


def test_a_grader_with_an_invalid_template_is_rejected_at_parse_time_with_its_field_path():
    with pytest.raises(GraderError) as exc:
        parse_grader(
            {
                "type": "string_check",
                "name": "n",
                "input": "{{ secret.key }}",
                "reference": "x",
                "operation": "eq",
            }
        )
    assert str(exc.value).startswith("grader.input: ")
    assert "namespace" in str(exc.value)
