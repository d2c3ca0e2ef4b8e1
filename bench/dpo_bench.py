#!/usr/bin/env python3
"""Reproducible DPO throughput benchmark: tunesmith ``method: dpo`` against TRL's DPOTrainer.

Workload: the SFT bench's 32M-parameter Llama, tokenizer and chats (``bench/sft_bench.py``
builds and caches them in ``OUT/assets``), turned into 1000 preference pairs: the prompt is a
chat up to its last assistant turn, ``chosen`` that chat's real last reply, ``rejected`` the
last reply of the next chat (conversational prompt/chosen/rejected JSONL, the same file for
both). Both setups train LoRA r16 / alpha 32 / dropout 0 on all linear projections, the
sigmoid DPO loss with beta 0.1, the reference being the base with the adapter disabled, AdamW
lr 5e-5, batch 4 pairs, max length 512, fp32, no gradient checkpointing, 30 steps.

Setups, each in its own fresh subprocess (so start-up and peak RSS are per setup):

  tunesmith         ``tunesmith.train`` (one padding-free row per pair: [prompt|chosen|rejected])
  trl               TRL ``DPOTrainer`` + PEFT, its defaults (padded chosen/rejected batches)
  trl-padding-free  the same with ``padding_free=True``

Usage::

    python bench/dpo_bench.py [--steps 30] [--setups tunesmith,trl,trl-padding-free]
                              [--python-peer .venv-bench/bin/python] [--threads 2] [--out bench/out]

Writes ``OUT/dpo/results.json`` and logs in ``OUT/dpo/logs``. Throughput is pairs per second
over the steady steps (step 1 excluded), from the interval between consecutive step ends.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import sft_bench as sb  # noqa: E402  (stdlib-only helpers: assets, env, process counters)

SETUPS = ("tunesmith", "trl", "trl-padding-free")
N_PAIRS = 1000
HPARAMS = dict(
    batch_size=4,
    max_length=512,
    lr=5e-5,
    lora_r=16,
    lora_alpha=32,
    lora_dropout=0.0,
    beta=0.1,
    warmup_ratio=0.03,
    max_grad_norm=1.0,
    seed=0,
)


def build_pairs(chats_path: str, out_path: Path) -> dict:
    """1000 conversational pairs from the bench chats (see the module docstring)."""
    chats = [json.loads(line) for line in open(chats_path, encoding="utf-8")][: N_PAIRS + 1]

    def split(messages):
        k = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        return messages[:k], messages[k]

    rows = []
    for i in range(N_PAIRS):
        prompt, chosen = split(chats[i]["messages"])
        _, other = split(chats[i + 1]["messages"])
        rows.append({"prompt": prompt, "chosen": [chosen], "rejected": [other]})
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {"pairs": len(rows), "path": str(out_path)}


# ================================================================================================
# children
# ================================================================================================


def child_tunesmith(args) -> dict:
    import logging

    import tunesmith

    manifest = json.loads(Path(args.assets, "manifest.json").read_text())
    events: dict[int, float] = {}

    class StepEvents(logging.Handler):
        def emit(self, record):
            if isinstance(record.msg, str) and record.msg.startswith("step %d/%d") and record.args:
                events[int(record.args[0])] = time.perf_counter()

    logging.getLogger("tunesmith").addHandler(StepEvents())
    hp = HPARAMS
    config = {
        "model": manifest["paths"]["model"],
        "method": "dpo",
        "data": {"train": args.pairs, "eval_fraction": 0},
        "adapter": {
            "type": "lora",
            "r": hp["lora_r"],
            "alpha": hp["lora_alpha"],
            "dropout": hp["lora_dropout"],
        },
        "preference": {"loss": "sigmoid", "beta": hp["beta"]},
        "train": {
            "max_steps": args.steps,
            "batch_size": hp["batch_size"],
            "max_length": hp["max_length"],
            "packing": False,
            "lr": hp["lr"],
            "warmup_ratio": hp["warmup_ratio"],
            "max_grad_norm": hp["max_grad_norm"],
            "seed": hp["seed"],
            "save_every": 0,
            "eval_every": 0,
            "threads": args.threads,
            "dtype": "fp32",
            "progress": "lines",
            "log_every": 1,
        },
        "output_dir": args.run_dir,
    }
    result = tunesmith.train(config, resume=False, process_start=args.t0)
    t_done = time.time()
    steps = [
        {
            "step": r["step"],
            "loss": r["loss"],
            "pairs": r["tokens"],
            "positions": r["tokens_total"],
            "accuracy": r.get("accuracy"),
            "in_step_s": r["step_time_s"],
            "interval_s": events[r["step"]] - events[r["step"] - 1]
            if r["step"] in events and r["step"] - 1 in events
            else None,
        }
        for r in result.history
    ]
    return {
        "first_step_s": result.first_step_s,
        "wall_s": t_done - args.t0,
        **sb.process_counters(),
        "steps": steps,
        "versions": sb.versions(["tunesmith", "torch", "transformers", "peft"]),
    }


def child_trl(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    manifest = json.loads(Path(args.assets, "manifest.json").read_text())
    hp = HPARAMS
    pending: list[dict] = []
    steps: list[dict] = []
    marks: dict = {"last_end": None}

    class MeasuringDPOTrainer(DPOTrainer):
        """Counts the token positions of each micro-batch; the training is DPOTrainer's."""

        def training_step(self, model, inputs, *rest, **kwargs):
            positions = sum(
                int(v.numel()) for k, v in inputs.items() if k.endswith("input_ids") and torch.is_tensor(v)
            )
            pending.append({"positions": positions})
            return super().training_step(model, inputs, *rest, **kwargs)

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            marks["begin"] = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            now = time.perf_counter()
            if state.global_step == 1:
                marks["first_step_wall"] = time.time()
            steps.append(
                {
                    "step": state.global_step,
                    "pairs": hp["batch_size"],
                    "in_step_s": now - marks["begin"],
                    "interval_s": None if marks["last_end"] is None else now - marks["last_end"],
                    "positions": sum(p["positions"] for p in pending),
                }
            )
            pending.clear()
            marks["last_end"] = now

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs and steps and steps[-1]["step"] == state.global_step:
                steps[-1]["loss"] = float(logs["loss"])
                steps[-1]["accuracy"] = logs.get("rewards/accuracies")

    tokenizer = AutoTokenizer.from_pretrained(manifest["paths"]["model"])
    dataset = Dataset.from_list([json.loads(line) for line in open(args.pairs, encoding="utf-8")])
    model = AutoModelForCausalLM.from_pretrained(manifest["paths"]["model"], dtype=torch.float32)
    lora = LoraConfig(
        r=hp["lora_r"],
        lora_alpha=hp["lora_alpha"],
        lora_dropout=hp["lora_dropout"],
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    dpo_args = DPOConfig(
        output_dir=args.run_dir,
        max_steps=args.steps,
        per_device_train_batch_size=hp["batch_size"],
        gradient_accumulation_steps=1,
        learning_rate=hp["lr"],
        lr_scheduler_type="cosine",
        warmup_steps=round(hp["warmup_ratio"] * args.steps),
        weight_decay=0.0,
        max_grad_norm=hp["max_grad_norm"],
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        seed=hp["seed"],
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        beta=hp["beta"],
        loss_type=["sigmoid"],
        max_length=2 * hp["max_length"],
        padding_free=args.setup == "trl-padding-free",
    )
    trainer = MeasuringDPOTrainer(
        model=model,
        args=dpo_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[StepTimer()],
    )
    trainer.train()
    t_done = time.time()
    return {
        "first_step_s": marks["first_step_wall"] - args.t0,
        "wall_s": t_done - args.t0,
        **sb.process_counters(),
        "steps": steps,
        "attn_implementation": model.config._attn_implementation,
        "versions": sb.versions(["trl", "torch", "transformers", "peft", "datasets", "accelerate"]),
    }


# ================================================================================================
# parent
# ================================================================================================


def run_child(python: str, args, out: Path, setup: str, pairs: str) -> dict:
    logs = out / "dpo" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    result_path, log_path = logs / f"{setup}.json", logs / f"{setup}.log"
    result_path.unlink(missing_ok=True)
    run_dir = out / "dpo" / "runs" / setup
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.time()
    cmd = [
        python,
        str(Path(__file__).resolve()),
        "--child",
        setup,
        "--result",
        str(result_path),
        "--assets",
        str(out / "assets"),
        "--pairs",
        pairs,
        "--threads",
        str(args.threads),
        "--steps",
        str(args.steps),
        "--run-dir",
        str(run_dir),
        "--t0",
        repr(t0),
    ]
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=sb.child_env(args.threads, out), cwd=str(sb.REPO)
        )
    if proc.returncode != 0 or not result_path.exists():
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
        return {"ok": False, "returncode": proc.returncode, "log": str(log_path), "error_tail": tail}
    return {"ok": True, "log": str(log_path), **json.loads(result_path.read_text())}


def summarize(res: dict) -> dict:
    steady = res["steps"][1:]
    t = sum(s["in_step_s"] if s.get("interval_s") is None else s["interval_s"] for s in steady)
    pairs = sum(s["pairs"] for s in steady)
    losses = [s["loss"] for s in res["steps"] if s.get("loss") is not None]
    return {
        "pairs_per_s": pairs / t,
        "steady_steps": len(steady),
        "steady_time_s": t,
        "positions_per_pair": sum(s["positions"] for s in steady) / pairs,
        "peak_rss_mb": res["peak_rss_mb"],
        "first_step_s": res["first_step_s"],
        "wall_s": res["wall_s"],
        "involuntary_ctx_switches": res["involuntary_ctx_switches"],
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
    }


def main_parent(args) -> int:
    out = Path(args.out).resolve()
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    if any(s not in SETUPS for s in setups):
        raise SystemExit(f"unknown setup in {setups}; choose from {', '.join(SETUPS)}")
    peer = sb.find_peer_python(args.python_peer)
    if any(s.startswith("trl") for s in setups) and not peer:
        raise SystemExit(
            "TRL setups need the peer venv: run `bash bench/setup_peer_env.sh` or pass --python-peer"
        )
    load = os.getloadavg()[0]
    if load > 0.5:
        print(
            f"warning: load average {load:.2f}: other work on this machine distorts the numbers",
            file=sys.stderr,
        )
    args.python, args.rebuild = sys.executable, False
    (out / "logs").mkdir(parents=True, exist_ok=True)  # sft_bench writes the asset build log there
    manifest = sb.ensure_assets(args, out)
    pairs = build_pairs(manifest["paths"]["train"], out / "dpo" / "pairs.jsonl")
    results = {
        "hparams": HPARAMS,
        "steps": args.steps,
        "threads": args.threads,
        "data": pairs,
        "machine": sb.machine_info(),
        "load_average_at_start": load,
        "runs": {},
        "summary": {},
    }
    for setup in setups:
        print(f"running {setup} ...", flush=True)
        res = run_child(sys.executable if setup == "tunesmith" else peer, args, out, setup, pairs["path"])
        results["runs"][setup] = res
        if not res["ok"]:
            print("\n".join(res["error_tail"]), file=sys.stderr)
            continue
        results["summary"][setup] = summarize(res)
        s = results["summary"][setup]
        print(
            f"  {s['pairs_per_s']:.2f} pairs/s, peak RSS {s['peak_rss_mb']:.0f} MiB, "
            f"loss {s['first_loss']:.4f} -> {s['last_loss']:.4f}",
            flush=True,
        )
    summ = results["summary"]
    if "tunesmith" in summ:
        for peer_setup in ("trl", "trl-padding-free"):
            if peer_setup in summ:
                results[f"ratio_vs_{peer_setup}"] = {
                    "pairs_per_s": summ["tunesmith"]["pairs_per_s"] / summ[peer_setup]["pairs_per_s"],
                    "peak_rss": summ["tunesmith"]["peak_rss_mb"] / summ[peer_setup]["peak_rss_mb"],
                }
    rows = [
        [
            k,
            f"{v['pairs_per_s']:.2f}",
            f"{v['peak_rss_mb']:.0f}",
            f"{v['positions_per_pair']:.0f}",
            f"{v['first_step_s']:.1f}",
            f"{v['first_loss']:.4f} -> {v['last_loss']:.4f}",
        ]
        for k, v in summ.items()
    ]
    if rows:
        print(
            sb.fmt_table(["setup", "pairs/s", "peak RSS MiB", "positions/pair", "first step s", "loss"], rows)
        )
    for key in [k for k in results if k.startswith("ratio_vs_")]:
        r = results[key]
        print(
            f"tunesmith {key.replace('ratio_vs_', 'vs ')}: {r['pairs_per_s']:.2f}x pairs/s, "
            f"{r['peak_rss']:.2f}x peak RSS"
        )
    (out / "dpo" / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"wrote {out / 'dpo' / 'results.json'}")
    return 0 if all(r["ok"] for r in results["runs"].values()) else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--setups", default=",".join(SETUPS))
    p.add_argument("--python-peer")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(BENCH_DIR / "out"))
    p.add_argument("--child", choices=SETUPS, help=argparse.SUPPRESS)
    for hidden in ("--result", "--assets", "--pairs", "--run-dir", "--t0"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.child:
        return main_parent(args)
    args.t0, args.setup = float(args.t0), args.child
    res = child_tunesmith(args) if args.child == "tunesmith" else child_trl(args)
    Path(args.result).write_text(json.dumps(res, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
