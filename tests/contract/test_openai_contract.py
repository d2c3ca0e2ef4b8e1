"""Contract tests: the official ``openai`` SDK against ``tunesmith serve`` over real loopback HTTP.

One tiny random Llama serves as the base, with two LoRA adapters (random, non-zero B so each
changes the answers). Expected answers come from an independent path: transformers' own
``generate`` (greedy) on the base or on a single-adapter ``PeftModel``.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import time
import urllib.parse

import pytest
import torch

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import factory  # noqa: E402

KEY = "sk-test-key"


def raw(method, url, body=None, key=KEY):
    """(status, parsed JSON) of one plain HTTP request (stdlib, independent of the SDK)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    conn.request(method, u.path, body=json.dumps(body) if body is not None else None, headers=headers)
    resp = conn.getresponse()
    data = json.loads(resp.read() or b"null")
    conn.close()
    return resp.status, data


def _make_adapter(model_dir, out, seed):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    cfg = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    model = get_peft_model(base, cfg)
    with torch.no_grad():  # random B at ~unit scale so the adapter clearly changes greedy choices
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(out)
    cfg_file = out / "adapter_config.json"
    data = json.loads(cfg_file.read_text())
    data["base_model_name_or_path"] = str(model_dir)
    cfg_file.write_text(json.dumps(data))
    return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_tokenizer):
    from tunesmith.serve.run import BackgroundServer
    from tunesmith.serve.server import InferenceServer

    root = tmp_path_factory.mktemp("serve")
    model_dir = root / "base"
    factory.build_model(model_dir, "llama", vocab_size=len(tiny_tokenizer), seed=3)
    tiny_tokenizer.save_pretrained(model_dir)
    adapters = root / "adapters"
    a = _make_adapter(model_dir, adapters / "alpha", 1)
    b = _make_adapter(model_dir, adapters / "beta", 2)
    _make_adapter(model_dir, adapters / "gamma", 5)
    server = InferenceServer(str(model_dir), model_id="base", device="cpu", max_batch=8)
    server.add_adapter("ft:alpha", str(a))
    server.add_adapter("ft:beta", str(b))
    with BackgroundServer(server, api_key=KEY, adapter_root=str(adapters)) as url:
        client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=60)
        yield {"server": server, "url": url, "client": client, "model_dir": model_dir, "adapters": adapters}
    server.close()


_REF_MODELS: dict = {}


def reference(stack, model_id, prompt_ids, max_new):
    """Greedy ids from transformers' generate on the base or a single-adapter PeftModel."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if model_id not in _REF_MODELS:
        model = AutoModelForCausalLM.from_pretrained(stack["model_dir"])
        if model_id != "base":
            model = PeftModel.from_pretrained(model, str(stack["adapters"] / model_id.split(":")[1]))
        _REF_MODELS[model_id] = model.eval()
    entry = stack["server"].get(model_id) or stack["server"].get("base")
    out = _REF_MODELS[model_id].generate(
        torch.tensor([prompt_ids]),
        max_new_tokens=max_new,
        do_sample=False,
        eos_token_id=entry.stop_ids,
        pad_token_id=0,
    )
    return out[0, len(prompt_ids) :].tolist()


def ref_text(tokenizer, ids):
    return tokenizer.decode(ids, skip_special_tokens=True).rstrip("\ufffd")


def chat_ids(stack, text, model="base"):
    server = stack["server"]
    return server.encode_chat(server.get(model), [{"role": "user", "content": text}])


def ask(client, model, text, **kw):
    kw.setdefault("max_tokens", 10)
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kw)


def test_models_list_and_retrieve(stack):
    ids = {m.id for m in stack["client"].models.list()}
    assert ids == {"base", "ft:alpha", "ft:beta"}
    alpha = stack["client"].models.retrieve("ft:alpha")
    assert alpha.id == "ft:alpha" and alpha.model_dump().get("parent") == "base"
    with pytest.raises(openai.NotFoundError):
        stack["client"].models.retrieve("nope")


def test_chat_matches_transformers_and_counts_usage(stack):
    r = ask(stack["client"], "base", "what color is the sky?", max_tokens=12)
    ids = chat_ids(stack, "what color is the sky?")
    expected = reference(stack, "base", ids, 12)
    tok = stack["server"].tokenizer
    assert r.choices[0].message.content == ref_text(tok, expected)
    assert r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens == len(ids)
    assert r.usage.completion_tokens == len(expected)
    assert r.usage.total_tokens == len(ids) + len(expected)
    stopped = expected[-1] in stack["server"].get("base").stop_ids
    assert r.choices[0].finish_reason == ("stop" if stopped else "length")


def test_two_adapters_answer_differently_and_correctly_in_one_batch(stack):
    """Concurrent requests to base and two adapters share batches; each equals its own reference."""
    client, tok = stack["client"], stack["server"].tokenizer
    jobs = [(m, p) for p in ("hello there", "what is the moon?") for m in ("base", "ft:alpha", "ft:beta")]
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: ask(client, job[0], job[1], max_tokens=10), jobs))
    got = {job: a.choices[0].message.content for job, a in zip(jobs, answers)}
    for (model, prompt), text in got.items():
        assert text == ref_text(tok, reference(stack, model, chat_ids(stack, prompt), 10)), (model, prompt)
    for p in ("hello there", "what is the moon?"):
        assert len({got[("base", p)], got[("ft:alpha", p)], got[("ft:beta", p)]}) == 3


def test_streaming_equals_non_streaming_with_usage(stack):
    client = stack["client"]
    full = ask(client, "ft:alpha", "tell me about tea", max_tokens=14)
    chunks = list(
        ask(
            client,
            "ft:alpha",
            "tell me about tea",
            max_tokens=14,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [full.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
    assert all(c.id == chunks[0].id and c.model == "ft:alpha" for c in chunks)


def test_stop_string_and_stop_token(stack):
    client, server = stack["client"], stack["server"]
    full = ask(client, "base", "one two three", max_tokens=16).choices[0].message.content
    assert len(full) >= 6
    stop = full[3:5]
    r = ask(client, "base", "one two three", max_tokens=16, stop=[stop, "zzzz"])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == full[: full.index(stop)]
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in ask(client, "base", "one two three", max_tokens=16, stop=stop, stream=True)
        if c.choices
    )
    assert streamed == r.choices[0].message.content
    # Force the end-of-turn token with logit_bias: an empty answer that stops after one token.
    eot = server.get("base").stop_ids[0]
    r = ask(client, "base", "hi", max_tokens=16, logit_bias={str(eot): 100})
    assert (r.choices[0].message.content, r.choices[0].finish_reason, r.usage.completion_tokens) == (
        "",
        "stop",
        1,
    )


def test_sampling_seed_n_and_logprobs(stack):
    client = stack["client"]
    kw = dict(max_tokens=8, temperature=1.0, top_p=0.9, seed=11, n=2)
    a, b = ask(client, "ft:beta", "hello", **kw), ask(client, "ft:beta", "hello", **kw)
    assert [c.index for c in a.choices] == [0, 1]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert a.choices[0].message.content != a.choices[1].message.content  # seed + index per choice
    c = ask(client, "ft:beta", "hello", **{**kw, "seed": 12})
    assert [x.message.content for x in c.choices] != [x.message.content for x in a.choices]
    r = ask(client, "base", "hello", max_tokens=5, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for item in content:  # greedy: the chosen token is the most likely one
        assert len(item.top_logprobs) == 3
        assert item.logprob == pytest.approx(item.top_logprobs[0].logprob)
        assert item.top_logprobs[0].logprob >= item.top_logprobs[1].logprob >= item.top_logprobs[2].logprob
        assert item.logprob <= 0


def test_completions_endpoint(stack):
    client, server = stack["client"], stack["server"]
    r = client.completions.create(
        model="ft:alpha", prompt=["the sun is", "one two"], max_tokens=6, temperature=0, logprobs=2
    )
    assert [c.index for c in r.choices] == [0, 1]
    tok = server.tokenizer
    for c, p in zip(r.choices, ["the sun is", "one two"]):
        ids = server.encode_text(server.get("ft:alpha"), p)
        assert c.text == ref_text(tok, reference(stack, "ft:alpha", ids, 6))
        assert len(c.logprobs.tokens) == 6 and c.finish_reason == "length"
    assert r.usage.prompt_tokens == sum(
        len(server.encode_text(server.get("base"), p)) for p in ["the sun is", "one two"]
    )
    assert r.usage.completion_tokens == 12
    echoed = client.completions.create(
        model="base", prompt="the sun is", max_tokens=3, temperature=0, echo=True
    )
    assert echoed.choices[0].text.startswith("the sun is")
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="ft:alpha", prompt="the sun is", max_tokens=6, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == r.choices[0].text


def test_errors_use_the_openai_envelope(stack):
    client, url = stack["client"], stack["url"]
    with pytest.raises(openai.BadRequestError) as exc:
        ask(client, "base", "hello " * 400)
    assert exc.value.body["code"] == "context_length_exceeded" and exc.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as exc:
        ask(client, "base", "hello", max_tokens=100_000)
    assert exc.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError) as exc:
        ask(client, "ft:nope", "hello")
    assert exc.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as exc:
        ask(client, "base", "hello", temperature=3)
    assert exc.value.body["param"] == "temperature"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
    status, body = raw(
        "POST",
        f"{url}/chat/completions",
        {"model": "base", "messages": [{"role": "user", "content": "x " * 2000}]},
    )
    assert status == 400
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    assert raw("POST", f"{url}/chat/completions", {"model": "base"})[1]["error"]["param"] == "messages"
    assert raw("GET", f"{url.removesuffix('/v1')}/health", key=None)[1]["status"] == "ok"  # no key needed


def test_adapters_added_and_removed_at_run_time(stack):
    client, url, server = stack["client"], stack["url"], stack["server"]
    status, body = raw("POST", f"{url}/adapters", {"id": "x", "path": "../base"})
    assert status == 400 and body["error"]["param"] == "path"
    status, body = raw("POST", f"{url}/adapters", {"id": "ft:gamma", "path": "gamma"})
    assert status == 200, body
    ids = chat_ids(stack, "hello", "ft:gamma")
    got = ask(client, "ft:gamma", "hello", max_tokens=8).choices[0].message.content
    assert got == ref_text(server.tokenizer, reference(stack, "ft:gamma", ids, 8))
    assert raw("DELETE", f"{url}/adapters/ft:gamma")[0] == 200
    with pytest.raises(openai.NotFoundError):
        ask(client, "ft:gamma", "hello")
    server.wait_idle_unloads()
    assert server.peft_adapters() == ["ft:alpha", "ft:beta"]
    assert raw("DELETE", f"{url}/adapters/ft:gamma")[0] == 404


def _open_stream(stack, model: str, max_tokens: int):
    """A raw streaming chat request that cannot stop early (end-of-turn ids banned), left for
    the caller to read as slowly as it likes: (connection, response)."""
    server = stack["server"]
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "logit_bias": {str(i): -100 for i in server.get("base").stop_ids},
    }
    u = urllib.parse.urlsplit(stack["url"])
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request(
        "POST",
        f"{u.path}/chat/completions",
        body=json.dumps(body),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
    )
    return conn, conn.getresponse()


def test_a_stalled_streaming_client_does_not_block_others(stack):
    client, server = stack["client"], stack["server"]
    stalled, resp = _open_stream(stack, "base", 400)
    assert resp.readline().startswith(b"data: ")  # one line, then stop reading: the server keeps going
    t0 = time.monotonic()
    r = ask(client, "ft:alpha", "what is the moon?", max_tokens=5)
    assert r.choices[0].finish_reason in ("length", "stop")
    assert time.monotonic() - t0 < 20
    assert server.scheduler.load["running"] == 1  # the stalled stream is still being generated
    stalled.sock.shutdown(2)
    stalled.close()
    # The client went away: its sequence leaves the batch.
    deadline = time.monotonic() + 20
    while server.scheduler.load["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.scheduler.load["running"] == 0


def test_streamed_logprobs_match_non_streamed(stack):
    client = stack["client"]
    full = ask(client, "ft:beta", "hello", max_tokens=6, logprobs=True, top_logprobs=1)
    chunks = list(ask(client, "ft:beta", "hello", max_tokens=6, logprobs=True, top_logprobs=1, stream=True))
    streamed = [
        item for c in chunks if c.choices and c.choices[0].logprobs for item in c.choices[0].logprobs.content
    ]
    assert [(x.token, x.logprob) for x in streamed] == [
        (x.token, x.logprob) for x in full.choices[0].logprobs.content
    ]
    legacy = client.completions.create(
        model="base", prompt="the sun is", max_tokens=5, temperature=0, logprobs=1
    )
    parts = [
        c.choices[0].logprobs
        for c in client.completions.create(
            model="base", prompt="the sun is", max_tokens=5, temperature=0, logprobs=1, stream=True
        )
        if c.choices and c.choices[0].logprobs
    ]
    assert [t for p in parts for t in p.tokens] == legacy.choices[0].logprobs.tokens
    assert [o for p in parts for o in p.text_offset] == legacy.choices[0].logprobs.text_offset


def test_removing_an_adapter_lets_running_requests_finish(stack):
    client, server = stack["client"], stack["server"]
    server.add_adapter("ft:delta", str(stack["adapters"] / "gamma"))
    conn, resp = _open_stream(stack, "ft:delta", 40)
    assert resp.readline().startswith(b"data: ")
    server.remove_adapter("ft:delta")
    with pytest.raises(openai.NotFoundError):  # gone for new requests at once
        ask(client, "ft:delta", "hello")
    assert "ft:delta" in server.peft_adapters()  # still loaded for the running stream
    rest = resp.read().decode()
    conn.close()
    assert rest.rstrip().endswith("data: [DONE]") and '"finish_reason":"length"' in rest
    server.wait_idle_unloads()
    assert "ft:delta" not in server.peft_adapters()
