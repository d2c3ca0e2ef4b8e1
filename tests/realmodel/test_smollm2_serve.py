"""``tunesmith serve --model SmolLM2.gguf --adapter zephyr=RUN`` in its own process, answering the
official ``openai`` SDK: the base is named by its GGUF file, the adapter is the tier's 10-step
LoRA run, and a greedy chat completion through the adapter returns text that differs from the
base's answer."""

from __future__ import annotations

import http.client
import signal
import socket
import time

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

KEY = "sk-realmodel"
QUESTION = "What is the warranty of the Zephyr Q3?"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


@pytest.fixture(scope="module")
def served(smollm2_gguf, smollm2_lora_run, tmp_path_factory, fork_trainer):
    """(base URL, log file) of one ``tunesmith serve`` process (forked from the warm
    ``fork_trainer``: a real server process without a second torch import), stopped with
    SIGTERM after the module."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    argv = ["serve", "--model", str(smollm2_gguf), "--adapter", f"zephyr={smollm2_lora_run}"]
    argv += ["--port", str(port), "--api-key", KEY, "--max-batch", "2", "--log-level", "warning"]
    pid = fork_trainer.start(argv, log)
    try:
        deadline = time.monotonic() + 180
        while not _ready(port):
            if not fork_trainer.alive(pid) or time.monotonic() > deadline:
                pytest.fail(f"tunesmith serve did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield f"http://127.0.0.1:{port}/v1", log
    finally:
        fork_trainer.stop(signal.SIGTERM)


def test_openai_sdk_chat_through_the_adapter(served, smollm2_gguf):
    url, log = served
    client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=120)
    ids = {m.id for m in client.models.list()}
    assert ids == {smollm2_gguf.name, "zephyr"}, ids

    def ask(model: str):
        return client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": QUESTION}], max_tokens=12, temperature=0
        )

    tuned = ask("zephyr")
    text = tuned.choices[0].message.content
    assert text and text.strip(), tuned
    assert tuned.model == "zephyr" and tuned.choices[0].finish_reason in ("stop", "length")
    assert 0 < tuned.usage.completion_tokens <= 12 and tuned.usage.prompt_tokens > 20  # default system prompt
    base = ask(smollm2_gguf.name)
    assert base.choices[0].message.content.strip()
    assert base.choices[0].message.content != text, "the adapter did not change the answer"
    assert "Traceback" not in log.read_text()
