"""A worker and a server on the same cores: training and serving alone, then together, with and
without tunesmith's thread budget (``tunesmith.threads``).

The fine-tuning service runs training (the worker's runs) and inference (the server) on one
machine. Each phase here starts fresh processes and measures:

- training: ``tunesmith train`` on the SFT bench's 32M model and chats (LoRA, batch 4, no
  packing), non-padding tokens/s over steps 2..N from its ``metrics.jsonl``;
- serving: ``tunesmith serve`` on the same model, rounds of 8 concurrent streamed chat
  completions of ``--tokens`` tokens each through the official ``openai`` SDK, completion
  tokens/s over the rounds that ran.

Phases: ``budget`` runs each process on its share (``service_split``: on this 2-core machine one
core each; the worker's training env and ``server --threads`` do the same), ``none`` lets each
use every core (torch's default). Alone, then together (serving rounds while the training runs).
The figure of merit is together / alone per side and setting.

    .venv/bin/python bench/share_bench.py [--steps 12] [--tokens 48] [--out bench/out/share]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

from serve_bench import PROMPTS, server_process, stream_one  # noqa: E402

from tunesmith.threads import THREAD_ENV, available_cores, service_split, thread_env  # noqa: E402


def _env(threads: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    env.update(PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if threads is not None:
        env.update(thread_env(threads))
    return env


def _train_config(assets: Path, out: Path, steps: int) -> Path:
    import yaml

    cfg = {
        "model": str(assets / "model"),
        "method": "sft",
        "data": {"train": str(assets / "train.jsonl"), "eval_fraction": 0},
        "adapter": {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "targets": "all-linear"},
        "train": {
            "max_steps": steps,
            "batch_size": 4,
            "max_length": 512,
            "packing": False,
            "lr": 2e-4,
            "save_every": 0,
            "seed": 0,
        },
        "output_dir": str(out),
    }
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _train_rate(run: Path) -> float:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    rows = [r for r in rows if "step_time_s" in r][1:]  # step 1 (warm-up) left out
    return sum(r["tokens_total"] for r in rows) / sum(r["step_time_s"] for r in rows)


def start_training(assets: Path, out: Path, steps: int, threads: int | None) -> subprocess.Popen:
    cfg = _train_config(assets, out, steps)
    log = open(out.with_suffix(".log"), "wb")  # noqa: SIM115 - closed with the process
    cmd = [sys.executable, "-m", "tunesmith", "train", str(cfg), "--no-resume"]
    if threads is not None:
        cmd += ["--set", f"train.threads={threads}"]
    return subprocess.Popen(cmd, env=_env(threads), stdout=log, stderr=subprocess.STDOUT)


def serve_rounds(url: str, tokens: int, keep_going) -> dict:
    """Rounds of 8 concurrent streams while ``keep_going()``; completion tokens/s over them."""
    import openai

    client = openai.OpenAI(base_url=url, api_key="bench", max_retries=0, timeout=600)
    bias = {}
    stream_one(client, "bench", PROMPTS[0], 4, bias)  # warm-up
    total, wall, rounds = 0, 0.0, 0
    while keep_going():
        results: list = [None] * 8

        def one(i, results=results):
            results[i] = stream_one(client, "bench", PROMPTS[i], tokens, bias)

        workers = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        t0 = time.perf_counter()
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        wall += time.perf_counter() - t0
        total += sum(r["completion_tokens"] for r in results)
        rounds += 1
    return {"tok_s": round(total / wall, 1), "rounds": rounds, "tokens": total, "wall_s": round(wall, 1)}


def phase(args, assets: Path, name: str, shares, train: bool, serve: bool) -> dict:
    """One phase: ``shares`` = (training threads, serving threads), None meaning torch's default."""
    out, steps, tokens = Path(args.out), args.steps, args.tokens
    run = out / name
    result = {}
    proc = start_training(assets, run, steps, shares[0]) if train else None
    if serve:
        with server_process(
            assets / "model", threads=shares[1], env=_env(shares[1]), extra=("--max-batch", "8")
        ) as url:
            if proc is None:
                t_end = time.monotonic() + args.serve_seconds
                result["serve"] = serve_rounds(url, tokens, lambda: time.monotonic() < t_end)
            else:
                result["serve"] = serve_rounds(url, tokens, lambda: proc.poll() is None)
    if proc is not None:
        if proc.wait() != 0:
            raise SystemExit(f"training failed in phase {name}: see {run.with_suffix('.log')}")
        result["train"] = {"tok_s": round(_train_rate(run), 1)}
    print(name, json.dumps(result), flush=True)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=12, help="training steps per phase")
    ap.add_argument("--tokens", type=int, default=48, help="tokens per streamed completion")
    ap.add_argument("--serve-seconds", type=float, default=30.0, help="serving alone: how long")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "share"))
    args = ap.parse_args(argv)
    assets = ROOT / "bench" / "out" / "assets"
    if not (assets / "model" / "model.safetensors").is_file():
        raise SystemExit("the SFT bench's assets are missing: run bench/sft_bench.py --steps 1 once")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cores = available_cores()
    budget = service_split(cores)
    none = (None, None)
    res = {"cores": cores, "budget_threads": {"train": budget[0], "serve": budget[1]}}
    for setting, shares in (("budget", budget), ("none", none)):
        res[setting] = {
            "train_alone": phase(args, assets, f"{setting}-train", shares, True, False),
            "serve_alone": phase(args, assets, f"{setting}-serve", shares, False, True),
            "together": phase(args, assets, f"{setting}-both", shares, True, True),
        }
        r = res[setting]
        r["ratio"] = {
            "train": round(r["together"]["train"]["tok_s"] / r["train_alone"]["train"]["tok_s"], 2),
            "serve": round(r["together"]["serve"]["tok_s"] / r["serve_alone"]["serve"]["tok_s"], 2),
        }
    (out / "results.json").write_text(json.dumps(res, indent=1), encoding="utf-8")
    print(json.dumps({k: res[k]["ratio"] for k in ("budget", "none")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
