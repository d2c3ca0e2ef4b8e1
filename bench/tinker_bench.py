"""The Tinker-compatible API's supervised loop against ``tunesmith train`` on the same workload.

Both arms train the same LoRA (r 16, alpha 32, no dropout; attention + MLP projections) on the
same batches — the engine's own packed windows of ``examples/support/train.jsonl`` rendered
for SmolLM2-135M-Instruct — with the same AdamW settings, for ``--steps`` optimizer steps:

- ``train``: ``tunesmith train CONFIG`` in a subprocess; step times from its ``metrics.jsonl``
  (``step_time_s``: the optimizer step's wall time, data to update).
- ``api``: ``tunesmith server --tinker-model …`` in a subprocess and the official ``tinker`` SDK
  in this process; a step is one ``forward_backward`` per forward pass of the window plus one
  ``optim_step``, timed from submitting the first call to the step's result (HTTP, protobuf,
  queue and polling included).

The first step of each arm is a warm-up and not counted. Reported: median seconds per step,
supervised-token throughput and the ratio api / train of steps per second (1.0 = no overhead).

``--part sampling`` (also part of ``all``): the sampler's batching of concurrent requests — 16
one-sample requests with different prompts sampled one at a time and as one batch, in process.
Run it alone (no other torch process on the machine)::

    python bench/tinker_bench.py --steps 8 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
DATA = REPO / "examples" / "support" / "train.jsonl"
NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
ADAM = dict(learning_rate=2e-4, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.0, grad_clip_norm=1.0)


def config(out: Path, steps: int, init: Path | None) -> dict:
    adapter = {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "targets": "all-linear"}
    if init is not None:
        adapter["init_from"] = str(init)
    return {
        "model": str(MODEL),
        "method": "sft",
        "data": {"train": str(DATA), "eval_fraction": 0},
        "adapter": adapter,
        "train": {
            "max_steps": steps,
            "batch_size": 8,
            "max_length": 256,
            "packing": True,
            "seed": 0,
            "lr": ADAM["learning_rate"],
            "scheduler": "constant",
            "warmup_steps": 0,
            "adam_beta1": ADAM["beta1"],
            "adam_beta2": ADAM["beta2"],
            "adam_eps": ADAM["eps"],
            "weight_decay": ADAM["weight_decay"],
            "max_grad_norm": ADAM["grad_clip_norm"],
            "dtype": "fp32",
            "device": "cpu",
            "save_every": 0,
            "eval_every": 0,
            "progress": "none",
        },
        "output_dir": str(out),
    }


def windows(steps: int, work: Path) -> list[tuple[list, int, int]]:
    """Per step: (datums per forward pass, supervised tokens N, tokens) of the engine's windows."""
    from tinker import types

    from tunesmith.run import prepare

    run = prepare(config(work / "windows", steps, None))
    out = []
    for step in range(steps):
        batches = run.trainer.window(step)
        n = sum(b.n_targets for b in batches)
        calls, tokens = [], 0
        for b in batches:
            ids = b.input_ids[0].tolist()
            supervised = set(b.target_positions.tolist())
            cu = b.cu_seqlens.tolist()
            tokens += len(ids)
            calls.append(
                [
                    types.Datum(
                        model_input=types.ModelInput.from_ints(ids[lo : hi - 1]),
                        loss_fn_inputs={
                            "target_tokens": ids[lo + 1 : hi],
                            "weights": [1.0 / n if p in supervised else 0.0 for p in range(lo, hi - 1)],
                        },
                    )
                    for lo, hi in zip(cu, cu[1:])
                ]
            )
        out.append((calls, n, tokens))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_api(steps: int, work: Path, threads: int, wins) -> list[float]:
    import tinker
    from tinker import types

    data = work / "server"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TINKER_TELEMETRY": "0"}
    exe = [sys.executable, "-m", "tunesmith"]
    key = subprocess.run(
        [*exe, "server", "--data", str(data), "keys", "create", "--project", "bench"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    port = free_port()
    server = subprocess.Popen(
        [
            *exe,
            "server",
            "--data",
            str(data),
            "--port",
            str(port),
            "--threads",
            str(threads),
            "--tinker-model",
            f"{NAME}={MODEL}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        import httpx

        while True:
            try:
                if httpx.get(url + "/api/v1/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)
        sc = tinker.ServiceClient(base_url=url, api_key="tml-" + key)
        tc = sc.create_lora_training_client(base_model=NAME, rank=16, seed=0, train_unembed=False).result()
        times = []
        for calls, _, _ in wins:
            t0 = time.perf_counter()
            futures = [tc.forward_backward(datums, "cross_entropy") for datums in calls]
            step = tc.optim_step(types.AdamParams(**ADAM))
            for f in futures:
                f.result()
            step.result()
            times.append(time.perf_counter() - t0)
        sc.close("success").result()
        return times
    finally:
        server.terminate()
        server.wait(30)


def run_train(steps: int, work: Path, threads: int) -> list[float]:
    import yaml

    out = work / "train"
    cfg = work / "train.yaml"
    cfg.write_text(yaml.safe_dump(config(out, steps, None)))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(
        [sys.executable, "-m", "tunesmith", "train", str(cfg), "--threads", str(threads)],
        check=True,
        env=env,
        capture_output=True,
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["step_time_s"] for r in rows if "step_time_s" in r]


def run_sampling(threads: int, requests: int, max_tokens: int) -> dict:
    """``requests`` one-sample requests (an RL loop's episodes: different prompts, temperature 1)
    sampled one at a time (:func:`sample`) and as one batch (:func:`sample_batch`), in process,
    on SmolLM2; tokens generated per second of each (best of 2)."""
    import torch

    from tunesmith.models.gguf_import import resolve_model_path
    from tunesmith.models.load import load_causal_lm
    from tunesmith.tinker.sampler import SampleSpec, sample, sample_batch

    torch.set_num_threads(threads)
    model = load_causal_lm(resolve_model_path(MODEL))
    rng = torch.Generator().manual_seed(0)
    prompts = [
        torch.randint(100, 40000, (int(n),), generator=rng).tolist()
        for n in torch.randint(30, 60, (requests,), generator=rng)
    ]
    spec = SampleSpec(num_samples=1, max_tokens=max_tokens, temperature=1.0)  # stop=[]: full length
    sample(model, prompts[0], SampleSpec(max_tokens=2))  # warm-up
    out = {}
    for name, fn in (
        ("one_at_a_time", lambda: [sample(model, p, spec) for p in prompts]),
        ("batched", lambda: sample_batch(model, [(p, spec) for p in prompts])),
    ):
        best = None
        for _ in range(2):
            t0 = time.perf_counter()
            results = fn()
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        tokens = sum(len(r.sequences[0].tokens) for r in results)
        out[name] = {"seconds": round(best, 2), "tokens_per_s": round(tokens / best, 1)}
    out["batched_over_one_at_a_time"] = round(
        out["batched"]["tokens_per_s"] / out["one_at_a_time"]["tokens_per_s"], 2
    )
    out["setup"] = {"requests": requests, "max_tokens": max_tokens, "threads": threads}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--part", choices=["all", "train", "sampling"], default="all")
    p.add_argument("--requests", type=int, default=16, help="sampling part: requests (episodes)")
    p.add_argument("--max-tokens", type=int, default=32, help="sampling part: tokens per request")
    p.add_argument("--out", default=str(REPO / "bench" / "out" / "tinker_bench.json"))
    args = p.parse_args()
    if args.part in ("all", "sampling"):
        res = run_sampling(args.threads, args.requests, args.max_tokens)
        print(json.dumps(res, indent=1))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).with_name("tinker_sampling_bench.json").write_text(json.dumps(res, indent=1))
        if args.part == "sampling":
            return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        wins = windows(args.steps, work)
        train = run_train(args.steps, work, args.threads)
        api = run_api(args.steps, work, args.threads, wins)
    n_sup = [n for _, n, _ in wins][1:]
    tokens = [t for _, _, t in wins][1:]
    res = {}
    for name, times in (("train", train[1:]), ("api", api[1:])):
        med = statistics.median(times)
        res[name] = {
            "median_step_s": round(med, 3),
            "tokens_per_s": round(sum(tokens) / sum(times), 1),
            "supervised_tokens_per_s": round(sum(n_sup) / sum(times), 1),
            "step_times_s": [round(t, 3) for t in times],
        }
    res["api_over_train_steps_per_s"] = round(res["train"]["median_step_s"] / res["api"]["median_step_s"], 3)
    res["setup"] = {
        "steps": args.steps,
        "threads": args.threads,
        "model": NAME,
        "data": str(DATA.relative_to(REPO)),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"{'arm':<6} {'s/step':>8} {'tok/s':>8} {'sup tok/s':>10}")
    for name in ("train", "api"):
        r = res[name]
        print(
            f"{name:<6} {r['median_step_s']:>8.3f} {r['tokens_per_s']:>8.1f} {r['supervised_tokens_per_s']:>10.1f}"
        )
    print(f"api / train (steps per second): {res['api_over_train_steps_per_s']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
