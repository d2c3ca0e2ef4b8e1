"""Hostile and extreme requests to ``tunesmith serve`` get clean answers and harm nobody else.

Each test names the failure it pins (docs/hardening.md, "## serve"). Most run the app in-process
(starlette's TestClient: the same ASGI app and scheduler thread as uvicorn); the isolation test
runs uvicorn on loopback with the official ``openai`` SDK streaming.
"""

from __future__ import annotations

import json
import threading

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx2")
pytest.importorskip("fastapi")


CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def make_adapter(model_dir, out, seed=1):
    """A random LoRA adapter (non-zero B) for ``model_dir``, saved at ``out``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir),
        LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=False),
    )
    model.save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(model_dir)
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_model_dir):
    from starlette.testclient import TestClient

    from tunesmith.serve.app import create_app
    from tunesmith.serve.server import InferenceServer

    root = tmp_path_factory.mktemp("adapter-root")
    make_adapter(tiny_model_dir, root / "alpha")
    (root / "broken").mkdir()
    (root / "broken" / "adapter_config.json").write_text("{not json")
    (root / "prefix").mkdir()
    (root / "prefix" / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    server = InferenceServer(
        str(tiny_model_dir), model_id="base", device="cpu", max_batch=8, context_length=96
    )
    with TestClient(create_app(server, adapter_root=str(root)), raise_server_exceptions=False) as client:
        yield {"client": client, "server": server, "root": root}
    server.close()


def chat(text="hello", **kw):
    return {
        "model": "base",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 6,
        "temperature": 0,
        **kw,
    }


def assert_400(response, param=None):
    assert response.status_code == 400, (response.status_code, response.text[:300])
    err = response.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"], err
    if param is not None:
        assert err["param"] == param, err
    return err


# ---- 2: request bodies that json.loads cannot take -------------------------------------------------
@pytest.mark.parametrize("route", [CHAT, COMPLETIONS, "/v1/adapters"])
@pytest.mark.parametrize(
    "body",
    [
        b"[" * 5000,
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
        b"9" * 5000,
        b'{"model": NaN}',
        b'{"model": 1e999, "prompt": "x"}',
        b"\xff\xfe{}",
    ],
    ids=["deep-list", "deep-object", "long-integer", "nan", "inf", "not-utf8"],
)
def test_bodies_json_cannot_take_are_400s(app, route, body):
    err = assert_400(app["client"].post(route, content=body, headers={"content-type": "application/json"}))
    assert "Traceback" not in err["message"]


@pytest.mark.parametrize(
    "route,body",
    [
        (CHAT, '{"model": "\\ud800", "messages": [{"role": "user", "content": "x"}]}'),
        (CHAT, '{"model": "base", "messages": [{"role": "user", "content": "a\\udfffb"}], "max_tokens": 2}'),
        (COMPLETIONS, '{"model": "base", "prompt": "\\ud800", "max_tokens": 2}'),
        (COMPLETIONS, '{"model": "base", "prompt": "a", "echo": true, "stop": ["\\ud83d"], "max_tokens": 2}'),
        ("/v1/adapters", '{"id": "ft:x", "path": "alpha\\ud800"}'),
    ],
    ids=["model", "message", "prompt", "stop", "adapter-path"],
)
def test_unpaired_surrogate_escapes_are_400s(app, route, body):
    """``"\\ud800"`` is valid JSON but not text: the 404 echoing such a model id could not be
    encoded (500) and the tokenizer raised TypeError on such a prompt (500)."""
    r = app["client"].post(route, content=body.encode(), headers={"content-type": "application/json"})
    assert "surrogate" in assert_400(r)["message"]


def test_a_body_over_the_size_cap_is_a_413(app):
    from tunesmith.serve.handlers import MAX_BODY_BYTES

    body = b'{"model": "base", "prompt": "' + b"x" * MAX_BODY_BYTES + b'"}'
    r = app["client"].post(COMPLETIONS, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


# ---- 1: sampling values that used to fail the whole batch -----------------------------------------------
@pytest.mark.parametrize("seed", [2**63, 2**64, 18446744073709551616, -(2**63) - 1])
def test_seed_outside_signed_64_bits_is_a_400(app, seed):
    err = assert_400(app["client"].post(CHAT, json=chat(seed=seed, temperature=1)), param="seed")
    assert "9223372036854775807" in err["message"] or "-9223372036854775808" in err["message"]


def test_seed_at_the_64_bit_edges_is_served(app):
    for seed in (2**63 - 1, -(2**63)):
        r = app["client"].post(CHAT, json=chat(seed=seed, temperature=1, n=3))
        assert r.status_code == 200 and len(r.json()["choices"]) == 3


@pytest.mark.parametrize("temperature", [1e-300, 1e-45, 5e-324, 1e-6])
def test_temperature_below_the_floor_is_answered_greedily(app, temperature):
    client = app["client"]
    greedy = client.post(CHAT, json=chat()).json()["choices"][0]["message"]["content"]
    r = client.post(CHAT, json=chat(temperature=temperature, top_p=5e-324))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == greedy


# ---- 3: logit_bias keys and values ------------------------------------------------------------------
@pytest.mark.parametrize(
    "bias",
    [{"1" * 5001: 1}, {"-1": 1}, {str(i): 1 for i in range(301)}, {"1": 101}],
    ids=["5001-digit-key", "negative-key", "301-entries", "value-101"],
)
def test_logit_bias_outside_the_limits_is_a_400(app, bias):
    assert_400(
        app["client"].post(
            COMPLETIONS, json={"model": "base", "prompt": "hi", "max_tokens": 1, "logit_bias": bias}
        ),
        param="logit_bias",
    )


def test_logit_bias_key_outside_the_vocabulary_is_a_400(app):
    err = assert_400(app["client"].post(CHAT, json=chat(logit_bias={"9999999": 5})), param="logit_bias")
    assert "outside the vocabulary" in err["message"]


# ---- 4: a request that can never be served is a 400 naming the limit --------------------------------------
def test_more_sequences_than_the_queue_ever_holds_is_a_400_not_a_503(app):
    client, limit = app["client"], app["server"].scheduler.max_waiting
    body = {"model": "base", "prompt": ["hi"] * 300, "max_tokens": 1}
    err = assert_400(client.post(COMPLETIONS, json=body), param="prompt")
    assert f"at most {limit}" in err["message"] and "300" in err["message"]
    err = assert_400(client.post(COMPLETIONS, json={**body, "prompt": ["hi"] * 40, "n": 8}), param="prompt")
    assert "320" in err["message"]
    assert_400(client.post(CHAT, json=chat(n=16)), param="n")  # n above max_batch (8)
    assert client.get("/health").json()["waiting"] == 0  # nothing was queued


# ---- 5: adapter routes name no server path, and NUL / odd names are 400s ------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "missing",
        "broken",
        "prefix",
        "alpha/../../x",
        "/etc",
        "alpha\x00x",
        "a\nb",
        "x" * 5000,
        "y" * 300 + "/z",
        "..",
        ".",
    ],
)
def test_adapter_errors_are_400s_without_server_paths(app, path):
    root = app["root"]
    err = assert_400(app["client"].post("/v1/adapters", json={"id": "ft:new", "path": path}), param="path")
    for secret in (str(root), str(root.resolve()), str(root.parent), app["server"].base_path):
        assert secret not in err["message"], err
    if path in ("missing", "broken", "prefix"):
        assert err["message"].startswith(path), err  # named as the client named it


def test_adapter_added_and_deleted(app):
    client = app["client"]
    r = client.post("/v1/adapters", json={"id": "ft:alpha", "path": "alpha"})
    assert r.status_code == 200, r.text
    assert client.post(CHAT, json=chat(model="ft:alpha")).status_code == 200
    assert client.delete("/v1/adapters/ft:alpha").json()["deleted"] is True
    assert client.delete("/v1/adapters/ft:alpha").status_code == 404
    app["server"].wait_idle_unloads()


# ---- 6: wrong method -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", CHAT),
        ("PUT", COMPLETIONS),
        ("POST", "/health"),
        ("DELETE", "/v1/models/base"),
        ("GET", "/v1/adapters"),
        ("POST", "/v1/models"),
    ],
)
def test_wrong_method_is_a_405_invalid_request_error(app, method, path):
    r = app["client"].request(method, path)
    assert r.status_code == 405, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "method_not_allowed"
    assert set(err) == {"message", "type", "param", "code"}


# ---- 7: the last resort: an unexpected exception is a JSON 500 in the envelope -----------------------------
def test_unexpected_exception_is_a_json_500_without_details(app, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("secret detail at /srv/internal")

    monkeypatch.setattr(app["server"], "encode_text", boom)
    r = app["client"].post(COMPLETIONS, json={"model": "base", "prompt": "hi", "max_tokens": 2})
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert err["type"] == "server_error" and "error reference" in err["message"]
    assert "secret" not in r.text and "/srv" not in r.text


def test_a_stream_that_fails_midway_ends_with_an_error_chunk(app, monkeypatch):
    from tunesmith.serve import respond

    def boom(*a, **k):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(respond, "chat_logprob", boom)
    r = app["client"].post(CHAT, json=chat(stream=True, logprobs=True))
    assert r.status_code == 200
    last = [line for line in r.text.splitlines() if line.startswith("data: ")][-1]
    err = json.loads(last[6:])["error"]
    assert err["type"] == "server_error" and "secret" not in r.text


# ---- isolation under failure: real server, concurrent streams, one bad client -------------------------------
POISON_TOP_P = 0.123456  # marks the request whose sampling is made to raise inside the batch

BAD = [  # (body changes, expected status)
    ({"temperature": 1e-300}, 200),
    ({"temperature": 1e-45}, 200),
    ({"temperature": 5e-324}, 200),
    ({"temperature": 1, "top_p": 5e-324}, 200),
    ({"temperature": 2, "seed": 2**63 - 1, "n": 4}, 200),
    ({"temperature": 1, "seed": -(2**63)}, 200),
    ({"seed": 2**64}, 400),
    ({"seed": -(2**63) - 1}, 400),
    ({"logit_bias": {"1" * 5001: 1}}, 400),
    ({"logit_bias": {"1": 100, "2": -100}}, 200),
    ({"presence_penalty": 2, "frequency_penalty": -2}, 200),
    ({"top_p": POISON_TOP_P, "temperature": 1}, 500),
    ({"top_p": POISON_TOP_P, "temperature": 1, "stream": True}, 200),
]


def test_one_clients_bad_inputs_never_disturb_other_streams(tiny_model_dir, tiny_tokenizer, monkeypatch):
    """4 clients stream greedy answers (end-of-turn banned, so each runs its full length) while
    a fifth sends every bad input in turn, including one whose sampling raises inside the batch;
    every good stream must equal its prompt decoded alone."""
    from tunesmith.serve import scheduler as sched_mod
    from tunesmith.serve.run import BackgroundServer
    from tunesmith.serve.server import InferenceServer

    real_select = sched_mod.select

    def poisoned_select(logits, params, counts, generator):
        if params.top_p == POISON_TOP_P:
            raise RuntimeError("secret failure inside the batch")
        return real_select(logits, params, counts, generator)

    monkeypatch.setattr(sched_mod, "select", poisoned_select)

    server = InferenceServer(str(tiny_model_dir), model_id="base", device="cpu", max_batch=12)
    ban = {str(t): -100 for t in server.get("base").stop_ids}
    prompts = ["hello what color", "the sky is blue", "one two three four", "night and day"]
    with BackgroundServer(server) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)

        def stream(prompt):
            text, reasons = "", []
            for chunk in client.chat.completions.create(
                model="base",
                messages=[{"role": "user", "content": prompt}],
                max_tokens=24,
                temperature=0,
                logit_bias=ban,
                stream=True,
            ):
                text += chunk.choices[0].delta.content or "" if chunk.choices else ""
                reasons += [c.finish_reason for c in chunk.choices if c.finish_reason]
            return text, reasons

        alone = {p: stream(p) for p in prompts}
        assert all(r == ["length"] for _, r in alone.values())
        stop, results, errors = threading.Event(), {p: [] for p in prompts}, []

        def good(prompt):
            try:
                while True:
                    results[prompt].append(stream(prompt))
                    if stop.is_set():
                        return
            except Exception as exc:  # reported below; the thread must not die silently
                errors.append(repr(exc))

        threads = [threading.Thread(target=good, args=(p,)) for p in prompts]
        for t in threads:
            t.start()
        try:
            with httpx.Client(base_url=url, timeout=60) as raw:
                for change, status in BAD:
                    body = {
                        "model": "base",
                        "messages": [{"role": "user", "content": "x"}],
                        "max_tokens": 8,
                        **change,
                    }
                    r = raw.post("/chat/completions", json=body)
                    assert r.status_code == status, (change, r.status_code, r.text[:300])
                    assert "secret" not in r.text and "Overflow" not in r.text
                    if change.get("stream") and change.get("top_p") == POISON_TOP_P:
                        last = [line for line in r.text.splitlines() if line.startswith("data: ")][-1]
                        assert json.loads(last[6:])["error"]["type"] == "server_error"
        finally:
            stop.set()
            for t in threads:
                t.join(120)
        assert not errors, errors
        for p in prompts:
            assert results[p] and all(got == alone[p] for got in results[p]), p
    server.close()
