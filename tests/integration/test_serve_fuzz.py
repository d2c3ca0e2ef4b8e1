"""Property test: no request body, method or id makes a serve route answer 5xx or crash.

Every route of ``tunesmith serve`` gets Hypothesis-generated hostile variants of a valid body
(tests/fuzz.py: wrong types, huge / tiny / non-finite numbers, odd unicode, dropped and unknown
fields, ``stream: true``, raw garbage and pathological JSON). Each answer must be a success or a
4xx in OpenAI's envelope (``fuzz.assert_clean``); a streamed answer must be well-formed SSE that
ends with ``[DONE]`` (or a clean error chunk). After each route the server must still answer a
normal greedy request exactly as before.

The app runs in-process (starlette's TestClient: the same ASGI app and scheduler thread uvicorn
would run). Example counts are per route (``fuzz.examples``); the long run and the measured
times are in docs/hardening.md:

    TUNESMITH_FUZZ_EXAMPLES=5000 .venv/bin/pytest tests/integration/test_serve_fuzz.py
"""

from __future__ import annotations

import json
import urllib.parse

import pytest

pytest.importorskip("hypothesis")
pytest.importorskip("fastapi")

import fuzz  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

CHAT = {
    "model": "base",
    "messages": [{"role": "user", "content": "hello"}],
    "max_tokens": 3,
    "temperature": 0,
    "stream": False,
    "n": 1,
    "seed": 7,
    "top_p": 1.0,
    "stop": ["\n"],
    "logit_bias": {"5": 1.0},
    "logprobs": True,
    "top_logprobs": 2,
    "stream_options": {"include_usage": True},
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
    "user": "u",
}
COMPLETION = {
    "model": "base",
    "prompt": ["one two", [5, 6, 7]],
    "max_tokens": 3,
    "temperature": 0.7,
    "stream": False,
    "n": 2,
    "seed": 3,
    "echo": True,
    "logprobs": 2,
    "stop": "x",
    "logit_bias": {"7": -1.0},
    "best_of": 2,
    "suffix": None,
    "user": "u",
}
ADAPTER = {"id": "ft:fz", "path": "alpha"}
IDS = st.one_of(fuzz.STRINGS, st.text(max_size=300), st.sampled_from(["base", "ft:fz", "ft:fz/../base"]))


def _sse_clean(text: str) -> None:
    """A streamed body: every ``data:`` line is JSON or ``[DONE]``; it ends with ``[DONE]`` or
    one error chunk in the envelope, which for client input must not be a server error."""
    data = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert data, text[:300]
    for item in data[:-1]:
        assert "error" not in json.loads(item), item
    if data[-1] != "[DONE]":
        err = json.loads(data[-1])["error"]
        assert err["message"] and err["type"] != "server_error", err


def check(response) -> None:
    fuzz.assert_clean(response)
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        _sse_clean(response.text)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    from starlette.testclient import TestClient
    from test_serve_hardening import make_adapter

    from tunesmith.serve.app import create_app
    from tunesmith.serve.server import InferenceServer

    root = tmp_path_factory.mktemp("adapter-root")
    make_adapter(tiny_model_dir, root / "alpha")
    # A short context keeps bodies whose max_tokens was dropped (reply up to the context) fast.
    server = InferenceServer(
        str(tiny_model_dir), model_id="base", device="cpu", max_batch=16, context_length=48
    )
    with TestClient(create_app(server, adapter_root=str(root)), raise_server_exceptions=False) as client:
        reference = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 8, "stop": None}).json()
        yield {"client": client, "server": server, "reference": reference}
        assert_still_serving(client, reference)
    server.close()


def assert_still_serving(client, reference) -> None:
    """A normal greedy request after the storm answers exactly as before it."""
    r = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 8, "stop": None})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["choices"] == reference["choices"]
    load = client.get("/health").json()
    assert load["running"] == 0 and load["waiting"] == 0, load


def _post(client, path, body: bytes):
    return client.post(path, content=body, headers={"content-type": "application/json"})


def _unload_fuzzed_adapters(server) -> None:
    for entry in server.models():
        if entry.adapter:
            server.remove_adapter(entry.id)
    server.wait_idle_unloads()


@pytest.mark.parametrize(
    "path,template",
    [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)],
    ids=["chat", "completions"],
)
def test_generation_routes(served, path, template):
    @fuzz.fuzz_settings(1000)
    @given(fuzz.bodies(template))
    def run(body):
        check(_post(served["client"], path, body))

    run()
    assert_still_serving(served["client"], served["reference"])


def test_add_adapter_route(served):
    @fuzz.fuzz_settings(300)
    @given(fuzz.bodies(ADAPTER))
    def run(body):
        try:
            check(_post(served["client"], "/v1/adapters", body))
        finally:
            _unload_fuzzed_adapters(served["server"])

    run()
    assert_still_serving(served["client"], served["reference"])


@pytest.mark.parametrize(
    "method,prefix",
    [("DELETE", "/v1/adapters/"), ("GET", "/v1/models/")],
    ids=["delete-adapter", "get-model"],
)
def test_id_routes(served, method, prefix):
    @fuzz.fuzz_settings(300)
    @given(IDS)
    def run(model_id):
        check(
            served["client"].request(
                method, prefix + urllib.parse.quote(model_id, safe="", errors="surrogatepass")
            )
        )

    run()
    assert served["server"].get("base") is not None  # the base can never be deleted
    assert_still_serving(served["client"], served["reference"])


@pytest.mark.parametrize(
    "method,path",
    [("GET", "/v1/models"), ("GET", "/health"), ("POST", "/v1/models"), ("PUT", "/v1/chat/completions")],
)
def test_other_routes_and_methods(served, method, path):
    @fuzz.fuzz_settings(100)
    @given(fuzz.bodies(CHAT))
    def run(body):
        check(
            served["client"].request(method, path, content=body, headers={"content-type": "application/json"})
        )

    run()
