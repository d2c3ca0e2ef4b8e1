"""Continuous batching == one request at a time.

Requests arrive while others are mid-generation, join the running batch (their KV cache merged
in with left padding), finish at different steps (rows dropped, padding trimmed) and wait when
the batch is full. Every greedy answer must equal transformers' ``generate`` on that prompt alone.
"""

import threading
import time

import factory
import pytest
import torch

PROMPTS = [
    "hello what color",
    "the sky is blue and the grass is green and the sun is",
    "one",
    "two three four five six seven",
    "night",
    "sun moon light dark day",
]
MAX_NEW = [12, 5, 9, 14, 3, 8]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_staggered_batched_greedy_equals_single_requests(tmp_path, tiny_tokenizer, arch):
    from transformers import AutoModelForCausalLM

    from tunesmith.serve.sampling import SamplingParams
    from tunesmith.serve.scheduler import GenRequest
    from tunesmith.serve.server import InferenceServer

    factory.build_model(tmp_path, arch, vocab_size=len(tiny_tokenizer), seed=7)
    tiny_tokenizer.save_pretrained(tmp_path)
    server = InferenceServer(str(tmp_path), device="cpu", max_batch=3)
    entry = server.get(server.base_id)
    widths, results, done = [], {}, []
    try:
        for i, (prompt, n) in enumerate(zip(PROMPTS, MAX_NEW)):
            ids = server.encode_text(entry, prompt)
            results[i], finished = [], threading.Event()

            def sink(ev, i=i, finished=finished):
                if ev["type"] == "token":
                    results[i].append(ev["choice"].token)
                    mask = server.scheduler._mask
                    if mask is not None:
                        widths.append((mask.shape[1], int(mask.sum(1).max())))
                elif ev["type"] in ("done", "error"):
                    finished.set()

            server.scheduler.submit(
                GenRequest(ids, n, sink, entry.tokenizer, [], params=SamplingParams(temperature=0))
            )
            done.append(finished)
            time.sleep(0.02 * (i % 3))
        assert all(f.wait(60) for f in done)
        assert server.scheduler.load == {**server.scheduler.load, "running": 0, "waiting": 0}
    finally:
        server.close()
    model = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    for i, prompt in enumerate(PROMPTS):
        enc = tiny_tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            ref = model.generate(
                **enc, max_new_tokens=MAX_NEW[i], do_sample=False, eos_token_id=None, pad_token_id=0
            )[0, enc["input_ids"].shape[1] :].tolist()
        assert results[i] == ref, (arch, prompt)
    # Padding is trimmed: the cache is never wider than its longest row (+1 column pending).
    assert all(width <= longest + 1 for width, longest in widths)
