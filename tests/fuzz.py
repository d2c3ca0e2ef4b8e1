"""Hostile request bodies for property tests of the HTTP servers (Hypothesis strategies).

``bodies(template)`` starts from a *valid* body of a route and breaks it the ways clients do:
fields replaced by values of the wrong type, huge and tiny numbers, NaN / ±inf, long and odd
unicode strings, nested containers; fields dropped; unknown fields added; or the whole body
replaced by raw bytes that are not a JSON object at all (deep nesting, cut-off JSON, invalid
UTF-8, an over-long integer). Every body is bytes, ready to POST.

``examples(default)`` is the per-route case count: ``default`` in the normal suite, or
``$TUNESMITH_FUZZ_EXAMPLES`` for the long run (docs/hardening.md). Cases are derandomised, so
a CI failure replays the same way; Hypothesis prints the shrunk failing body.

``assert_clean(response)``: the answer is a success or a 4xx in OpenAI's error envelope.
"""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def examples(default: int) -> int:
    return int(os.environ.get("TUNESMITH_FUZZ_EXAMPLES", default))


def fuzz_settings(default: int):
    """Hypothesis settings for one route's property test."""
    return settings(
        max_examples=examples(default),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 2**64, -(2**63) - 1, 10**30, 18446744073709551616]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e-300, 1e-45, 5e-324, -1e-300, 1e308, -1e308, 0.0, -0.0]),
)
STRINGS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "auto",
            "\x00",
            "../../etc/passwd",
            "a\x00b",
            "ft:",
            "{{ 7*7 }}",
            "é" * 300,
            "\ud7ff\ue000\U0010ffff",
            "x" * 5000,
            "1" * 5001,
            "\ud800",
            "a\udfffb",
        ]
    ),  # unpaired surrogates: valid JSON escapes, not text
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, STRINGS)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(STRINGS, inner, max_size=4)),
    max_leaves=12,
)


def _raw() -> st.SearchStrategy[bytes]:
    """Bodies that are not a JSON object: garbage bytes and pathological JSON texts."""
    deep = st.integers(min_value=50, max_value=20000).flatmap(
        lambda n: st.sampled_from(["[" * n + "]" * n, '{"a":' * n + "1" + "}" * n, "[" * n])
    )
    return st.one_of(
        st.binary(max_size=64),
        deep.map(str.encode),
        st.sampled_from(
            [
                b"",
                b"null",
                b"[]",
                b"1",
                b'"x"',
                b"{",
                b'{"model":',
                b"\xff\xfe{}",
                b"NaN",
                b"9" * 5000,
                b'{"model": 1e999}',
                b'{"a": "\\ud800"}',
            ]
        ),
    )


def _mutate(template: dict) -> st.SearchStrategy[dict]:
    keys = sorted(template)

    @st.composite
    def build(draw):
        body = json.loads(json.dumps(template))
        for key in draw(st.lists(st.sampled_from(keys), unique=True, max_size=len(keys))) if keys else []:
            action = draw(st.sampled_from(["replace", "drop", "nest"]))
            if action == "drop":
                body.pop(key, None)
            elif action == "nest" and isinstance(body[key], dict):
                body[key] = draw(_mutate(body[key]))
            elif (
                action == "nest"
                and isinstance(body[key], list)
                and body[key]
                and isinstance(body[key][0], dict)
            ):
                body[key] = [draw(_mutate(body[key][0]))] + body[key][1:]
            else:
                body[key] = draw(VALUES)
        for key, value in draw(st.dictionaries(STRINGS, VALUES, max_size=2)).items():
            body.setdefault(key, value)
        return body

    return build()


def bodies(template: dict) -> st.SearchStrategy[bytes]:
    """Broken variants of the valid body ``template`` (mostly), or raw non-object bytes."""
    mutated = _mutate(template).map(lambda b: json.dumps(b).encode())
    return st.one_of(mutated, mutated, mutated, _raw())


def assert_clean(response) -> None:
    """A success, or a 4xx whose JSON body is OpenAI's error envelope."""
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        err = response.json()["error"]
        assert isinstance(err["message"], str) and err["message"], err
        assert isinstance(err["type"], str) and err["type"] != "server_error", err
        assert "param" in err and "code" in err, err
