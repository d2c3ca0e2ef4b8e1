"""Serving benchmark: single-request decode speed and 8-concurrent throughput over real HTTP.

Starts ``tunesmith serve``'s app in-process on a loopback port (or targets ``--url``) for a fixed
model (default: the shipped 8M-parameter ``models/tunesmith-base``), drives it with the official
``openai`` SDK, and prints one JSON object. Every request decodes exactly ``--tokens`` tokens
(greedy; the stop tokens are given logit_bias -100 so no request ends early). As a peer, the same
model's plain transformers ``generate`` is timed on the same prompts (single, and one static
batch of 8 left-padded prompts).

    .venv/bin/python bench/serve_bench.py [--model models/tunesmith-base] [--tokens 128]

Measures:
  single_decode_tok_s   (tokens - 1) / (time of last token - time of first token), one stream
  single_ttft_s         request sent -> first streamed token
  concurrent8_tok_s     total completion tokens of 8 simultaneous requests / wall time
  hf_generate_*         the transformers peer on the same prompts and token counts
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [
    "How do I descale a kettle?",
    "What is a package manager?",
    "Explain what a daemon is.",
    "How do I list files in a directory?",
    "What does the kernel do?",
    "How do I compress a folder?",
    "What is a symbolic link?",
    "How can I check disk usage?",
]


def stream_one(client, model: str, prompt: str, tokens: int, bias: dict) -> dict:
    t0 = time.perf_counter()
    stamps = []
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=tokens,
        temperature=0,
        logit_bias=bias,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
        if chunk.usage:
            usage = chunk.usage
    end = time.perf_counter()
    return {
        "ttft": stamps[0] - t0,
        "first": stamps[0],
        "last": stamps[-1],
        "start": t0,
        "end": end,
        "completion_tokens": usage.completion_tokens,
    }


def bench_server(url: str, model: str, tokens: int, bias: dict, key: str) -> dict:
    import openai

    client = openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=600)
    stream_one(client, model, PROMPTS[0], 8, bias)  # warm-up
    singles = [stream_one(client, model, p, tokens, bias) for p in PROMPTS[:3]]
    decode = [(s["completion_tokens"] - 1) / (s["last"] - s["first"]) for s in singles]
    results: list = [None] * 8

    def worker(i):
        results[i] = stream_one(client, model, PROMPTS[i], tokens, bias)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    total = sum(r["completion_tokens"] for r in results)
    return {
        "single_decode_tok_s": round(sorted(decode)[1], 1),
        "single_decode_tok_s_all": [round(d, 1) for d in decode],
        "single_ttft_s": round(sorted(s["ttft"] for s in singles)[1], 3),
        "concurrent8_tok_s": round(total / wall, 1),
        "concurrent8_wall_s": round(wall, 2),
        "concurrent8_completion_tokens": total,
        "concurrent8_ttft_max_s": round(max(r["ttft"] for r in results), 3),
    }


def bench_hf(model_dir: str, tokens: int) -> dict:
    import torch

    from tunesmith.models.generate import format_prompt, load_for_inference

    model, tok = load_for_inference(model_dir)
    tok.padding_side = "left"
    texts = [format_prompt(tok, p) for p in PROMPTS]
    kw = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        enc = tok(texts[:1], return_tensors="pt", add_special_tokens=False)
        model.generate(**enc, **{**kw, "max_new_tokens": 8, "min_new_tokens": 8})
        t0 = time.perf_counter()
        model.generate(**enc, **kw)
        single = time.perf_counter() - t0
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        t0 = time.perf_counter()
        model.generate(**enc, **kw)
        batch = time.perf_counter() - t0
    return {
        "hf_generate_single_tok_s": round(tokens / single, 1),
        "hf_generate_batch8_tok_s": round(8 * tokens / batch, 1),
    }


@contextlib.contextmanager
def server_process(
    model: str,
    *,
    model_id: str = "bench",
    api_key: str = "bench",
    threads: int | None = None,
    env: dict | None = None,
    extra: tuple[str, ...] = (),
):
    """``tunesmith serve`` in a child process on a free loopback port; yields its ``/v1`` URL.
    ``env``: the child's environment (default: this one), with this checkout's ``src`` on the path."""
    import socket
    import subprocess
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "tunesmith", "serve", "--model", str(model), "--model-id", model_id]
    cmd += ["--port", str(port), "--api-key", api_key, "--log-level", "warning", *extra]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {**(os.environ if env is None else env), "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "tunesmith-base"))
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument(
        "--url", help="benchmark a running server instead (its API base, e.g. http://127.0.0.1:8000/v1)"
    )
    ap.add_argument("--model-id", default="bench")
    ap.add_argument("--api-key", default="bench")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for the server and the peer (default: torch's choice)",
    )
    ap.add_argument("--no-peer", action="store_true", help="skip the transformers generate peer")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from tunesmith.models.load import load_tokenizer
    from tunesmith.models.template import stop_token_ids

    bias = {str(i): -100 for i in stop_token_ids(load_tokenizer(args.model))}
    out = {
        "model": args.model,
        "tokens_per_request": args.tokens,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
    }
    if args.url:
        out.update(bench_server(args.url, args.model_id, args.tokens, bias, args.api_key))
    else:
        # The server runs in its own process (as `tunesmith serve` would), so the benchmark's
        # client threads do not compete with the generation thread for the GIL.
        with server_process(
            args.model, model_id=args.model_id, api_key=args.api_key, threads=args.threads
        ) as url:
            out.update(bench_server(url, args.model_id, args.tokens, bias, args.api_key))
    if not args.no_peer:
        out.update(bench_hf(args.model, args.tokens))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
