"""The door: every value that could fail inside the shared batch is a 400 before it gets there."""

import pytest
from pydantic import ValidationError

from tunesmith.serve.protocol import (
    MAX_LOGIT_BIAS,
    SEED_MAX,
    SEED_MIN,
    ChatCompletionRequest,
    CompletionRequest,
)


def _completion(**kw):
    return CompletionRequest.model_validate({"model": "m", "prompt": "x", **kw})


def _rejected(field, **kw) -> str:
    with pytest.raises(ValidationError) as exc:
        _completion(**kw)
    err = exc.value.errors()[0]
    assert err["loc"][0] == field, err
    return err["msg"]


def test_seed_is_a_signed_64_bit_integer_as_in_openai():
    assert (SEED_MIN, SEED_MAX) == (-(2**63), 2**63 - 1)
    assert _completion(seed=SEED_MAX).seed == SEED_MAX and _completion(seed=SEED_MIN).seed == SEED_MIN
    for seed in (2**63, 2**64, 18446744073709551616, -(2**63) - 1, 10**30):
        _rejected("seed", seed=seed)


def test_logit_bias_keys_are_short_non_negative_token_ids():
    assert _completion(logit_bias={"0": 1, "4294967295": -100}).logit_bias
    for key in ("1" * 5001, "1" * 11, "-1", " 1", "1.0", "x", "", "١"):  # the last is an Arabic-Indic digit
        assert "token ids" in _rejected("logit_bias", logit_bias={key: 1})


def test_logit_bias_is_capped_at_openais_300_entries():
    assert MAX_LOGIT_BIAS == 300
    assert len(_completion(logit_bias={str(i): 1 for i in range(300)}).logit_bias) == 300
    assert "at most 300" in _rejected("logit_bias", logit_bias={str(i): 1 for i in range(301)})


@pytest.mark.parametrize("field", ["temperature", "top_p", "presence_penalty", "frequency_penalty"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "nan", "Infinity"])
def test_non_finite_floats_are_refused(field, value):
    _rejected(field, **{field: value})


def test_non_finite_logit_bias_values_are_refused():
    for value in (float("nan"), float("inf"), "-inf"):
        _rejected("logit_bias", logit_bias={"1": value})


def test_tiny_temperatures_pass_the_door():
    # They are valid (0 <= T <= 2) and defined: below 1e-5 they select the argmax.
    for t in (1e-300, 1e-45, 5e-324):
        assert (
            ChatCompletionRequest.model_validate(
                {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": t}
            ).temperature
            == t
        )
