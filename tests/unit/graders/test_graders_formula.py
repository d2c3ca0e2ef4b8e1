"""calculate_output: the allowed arithmetic, hand-computed values, and everything rejected."""

import math

import pytest

from tunesmith.graders.formula import FormulaError, FormulaSyntaxError, parse_formula

NAMES = {"a", "b", "acc"}


def value(text, **scores):
    return parse_formula(text, NAMES).evaluate({"a": 0.0, "b": 0.0, "acc": 0.0, **scores})


@pytest.mark.parametrize(
    "text, scores, expected",
    [
        ("0.5 * a + 0.5 * b", {"a": 1.0, "b": 0.4}, 0.7),  # 0.5 + 0.2
        ("(a + b + acc) / 3", {"a": 1.0, "b": 0.5, "acc": 0.0}, 0.5),  # 1.5 / 3
        ("a - b", {"a": 0.25, "b": 1.0}, -0.75),
        ("2^3^2", {}, 512.0),  # ^ is power, right-associative: 2^(3^2) = 2^9
        ("2**3", {}, 8.0),
        ("-a^2", {"a": 3.0}, -9.0),  # power binds tighter than unary minus: -(3^2)
        ("(-a)^2", {"a": 3.0}, 9.0),
        ("+a", {"a": 0.5}, 0.5),
        ("min(a, b, 0.3)", {"a": 0.9, "b": 0.6}, 0.3),
        ("max(a)", {"a": 0.9}, 0.9),
        ("abs(a - 1)", {"a": 0.25}, 0.75),
        ("floor(2.7) + ceil(2.1)", {}, 5.0),  # 2 + 3
        ("sqrt(16)", {}, 4.0),
        ("exp(0)", {}, 1.0),
        ("log(exp(2))", {}, 2.0),  # natural log
    ],
)
def test_allowed_formulas_evaluate_to_hand_computed_values(text, scores, expected):
    assert value(text, **scores) == pytest.approx(expected, abs=1e-12)


def test_names_lists_the_sub_graders_used():
    assert parse_formula("min(a, 1) + acc", NAMES).names == {"a", "acc"}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("__import__('os')", "'__import__' is not allowed"),
        ("__import__('os').system('id')", "not allowed"),
        ("a.__class__", "Attribute"),
        ("a[0]", "Subscript"),
        ("open('/etc/passwd')", "call of 'open' is not allowed"),
        ("round(a)", "call of 'round' is not allowed"),
        ("(lambda: 1)()", "not allowed"),
        ("a if b else acc", "IfExp"),
        ("a % b", "operator % is not allowed"),
        ("a // b", "operator // is not allowed"),
        ("a < b", "Compare"),
        ("'text'", "only numbers"),
        ("True", "only numbers"),
        ("1j", "only numbers"),
        ("unknown + 1", "unknown name 'unknown'"),
        ("min", "a function name must be called"),
        ("min()", "min() takes one or more arguments, got 0"),
        ("abs(a, b)", "abs() takes 1 argument, got 2"),
        ("max(*a)", "plain positional arguments"),
        ("max(a, key=b)", "plain positional arguments"),
        ("a +", "not a valid formula"),
        ("a; b", "not a valid formula"),
        ("", "non-empty"),
        ("(" * 300 + "a" + ")" * 300, ""),
        ("a" + " + a" * 400, "characters long"),
    ],
)
def test_everything_else_is_rejected(text, fragment):
    with pytest.raises(FormulaSyntaxError) as exc:
        parse_formula(text, NAMES)
    assert fragment in str(exc.value)


@pytest.mark.parametrize(
    "text, scores",
    [
        ("a / b", {"a": 1.0, "b": 0.0}),
        ("sqrt(a - 1)", {"a": 0.0}),
        ("log(a)", {"a": 0.0}),
        ("9^9^9", {}),  # evaluated in floats: overflow, not a huge integer
        ("(0 - 8) ^ (1 / 3)", {}),  # a complex result
    ],
)
def test_formulas_without_a_finite_real_value_are_formula_errors(text, scores):
    with pytest.raises(FormulaError):
        value(text, **scores)


def test_evaluation_is_float_arithmetic():
    assert isinstance(value("1 + 1"), float)
    assert not math.isnan(value("0.1 + 0.2"))
