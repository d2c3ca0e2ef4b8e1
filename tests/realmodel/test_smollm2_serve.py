"""``tunesmith serve --model SmolLM2.gguf --adapter zephyr=RUN`` in its own process, answering the
official ``openai`` SDK: the base is named by its GGUF file, the adapter is the tier's 10-step
LoRA run, and a greedy chat completion through the adapter returns text that differs from the
base's answer."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
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
def served(smollm2_gguf, smollm2_lora_run, tmp_path_factory):
    """(base URL, log file) of one ``tunesmith serve`` process, stopped after the module."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tunesmith",
                "serve",
                "--model",
                str(smollm2_gguf),
                "--adapter",
                f"zephyr={smollm2_lora_run}",
                "--port",
                str(port),
                "--api-key",
                KEY,
                "--max-batch",
                "2",
                "--log-level",
                "warning",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while not _ready(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"tunesmith serve did not come up (exit {proc.poll()}):\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.25)
        yield f"http://127.0.0.1:{port}/v1", log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
