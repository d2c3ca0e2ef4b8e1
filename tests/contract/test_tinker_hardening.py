"""Hostile and broken requests to the Tinker routes: every one is answered with a 4xx naming the
problem (or a failed future with category ``user``), never a 5xx, and the server keeps serving."""

from __future__ import annotations

import itertools

import httpx
import pytest
from tinker_harness import tinker_fixtures, tinker_url

pytest.importorskip("tinker")

svc, tinker_client = tinker_fixtures("tinker_hardening")

ROUTES = [
    "create_session",
    "session_heartbeat",
    "create_model",
    "get_info",
    "unload_model",
    "forward_backward",
    "optim_step",
    "save_weights",
    "save_weights_for_sampler",
    "load_weights",
    "create_sampling_session",
    "asample",
    "retrieve_future",
    "weights_info",
]
JUNK = [
    b"",
    b"not json",
    b"[]",
    b"null",
    b'"a string"',
    b"{}",
    b'{"model_id": 5}',
    b'{"model_id": null, "seq_id": -1}',
    b'{"session_id": {"$gt": ""}}',
    b'{"model_id": "../../etc/passwd", "path": "../x", "request_id": "req_x"}',
    b'{"base_model": "tiny", "session_id": "s", "model_seq_id": 1e309, "lora_config": {"rank": -3}}',
    b'{"path": "tinker://../../x/weights/y", "optimizer": true}',
    b'{"num_samples": 100000000, "prompt": {"chunks": []}, "sampling_params": {"max_tokens": 1}}',
    b'{"a": "\\u0000"}',
    b"{" * 5000,
]


def _post(svc, route, body, content_type="application/json"):
    return httpx.post(
        tinker_url(svc) + "/api/v1/" + route,
        content=body,
        headers={"X-API-Key": "tml-" + svc.key_a, "Content-Type": content_type},
        timeout=60,
    )


@pytest.mark.parametrize("route", ROUTES)
def test_junk_bodies_get_4xx(svc, route):
    for body in JUNK:
        r = _post(svc, route, body)
        assert 400 <= r.status_code < 500, (route, body[:60], r.status_code, r.text[:300])
        assert "error" in r.json()


def test_forward_backward_content_types_and_encodings(svc):
    for ctype, enc in itertools.product(
        ["application/x-protobuf", "text/plain", "application/json"], [None, "zstd", "gzip"]
    ):
        headers = {"X-API-Key": "tml-" + svc.key_a, "Content-Type": ctype}
        if enc:
            headers["Content-Encoding"] = enc
        r = httpx.post(
            tinker_url(svc) + "/api/v1/forward_backward", content=b"\x08\x96\x01garbage", headers=headers
        )
        assert r.status_code == 400, (ctype, enc, r.text)


def test_huge_sampling_requests_are_refused_not_run(svc, tinker_client):
    from tinker import types

    sc = tinker_client()
    sampler = sc.create_sampling_client(base_model="tiny").result()
    import tinker

    with pytest.raises((tinker.RequestFailedError, tinker.BadRequestError), match="max_tokens|context"):
        sampler.sample(
            types.ModelInput.from_ints([5, 6]),
            num_samples=1,
            sampling_params=types.SamplingParams(max_tokens=10**6),
        ).result()
    with pytest.raises((tinker.RequestFailedError, tinker.BadRequestError), match="num_samples"):
        sampler.sample(
            types.ModelInput.from_ints([5, 6]),
            num_samples=10**6,
            sampling_params=types.SamplingParams(max_tokens=1),
        ).result()
    with pytest.raises((tinker.RequestFailedError, tinker.BadRequestError), match="vocabulary|prompt"):
        sampler.sample(
            types.ModelInput.from_ints([5, 10**6]),
            num_samples=1,
            sampling_params=types.SamplingParams(max_tokens=1),
        ).result()
    # ... and the server still samples.
    ok = sampler.sample(
        types.ModelInput.from_ints([5, 6]),
        num_samples=1,
        sampling_params=types.SamplingParams(max_tokens=2, stop=[]),
    ).result()
    assert len(ok.sequences[0].tokens) == 2


def test_routes_need_a_key(svc):
    for route in ROUTES:
        r = httpx.post(tinker_url(svc) + "/api/v1/" + route, json={})
        assert r.status_code == 401, route
