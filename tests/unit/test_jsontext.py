"""jsontext.loads: every way outside JSON text can hurt is one JSONDecodeError (issue 16)."""

from __future__ import annotations

import json

import pytest

from tunesmith import jsontext


@pytest.mark.parametrize(
    "text, says",
    [
        ("[" * 5000 + "]" * 5000, "nested more than 100 levels deep"),  # RecursionError inside json
        ("[" * 101 + "]" * 101, "nested more than 100 levels deep"),  # parses, but past the bound
        ("7" * 5000, "Exceeds the limit (4300 digits)"),  # int() digit limit
        ('{"a": "\\ud800"}', "unpaired UTF-16 surrogate"),
        ('{"\\udfffkey": 1}', "unpaired UTF-16 surrogate"),
    ],
)
def test_hostile_text_is_a_json_decode_error(text, says):
    with pytest.raises(json.JSONDecodeError) as caught:
        jsontext.loads(text)
    assert says in caught.value.msg


def test_nan_is_refused_only_when_asked():
    assert jsontext.loads('{"a": NaN}')["a"] != jsontext.loads('{"a": NaN}')["a"]  # NaN
    with pytest.raises(jsontext.BadJSON, match="NaN is not a valid JSON number"):
        jsontext.loads('{"a": NaN}', allow_nan=False)


def test_ordinary_json_is_unchanged():
    text = (
        '{"a": [1, 2.5, {"b": "\\ud83d\\ude00 \\\\ud800"}], "c": null}'  # a joined pair, an escaped backslash
    )
    assert jsontext.loads(text) == json.loads(text)
    assert jsontext.loads("[" * 100 + "]" * 100) == json.loads("[" * 100 + "]" * 100)
    assert jsontext.loads('"\\ud800"', allow_surrogates=True) == "\ud800"
    assert jsontext.depth({"a": [1, {"b": []}]}) == 4 and jsontext.depth(3) == 0
