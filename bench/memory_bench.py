"""Peak memory of full fine-tuning vs LoRA vs QLoRA on one model, against tunesmith's estimate.

Builds (once, cached in ``--work``) a random-init Llama of 325M (or, ``--model large``, 856M)
parameters from a config — nothing is downloaded — and a synthetic chat data set, then trains
each mode for a few steps in its own fresh process (``--child MODE``) and records that
process's peak resident set size (``VmHWM`` in /proc/self/status: the high-water mark of
everything the process held, file-backed pages included). The parent computes ``tunesmith estimate``'s prediction for the same config and
reports the error. Modes run one after another, never concurrently.

    .venv/bin/python bench/memory_bench.py                # all three modes
    .venv/bin/python bench/memory_bench.py --modes qlora  # one
    .venv/bin/python bench/memory_bench.py --model large --modes lora,qlora --steps 1

Results: ``--work``/results.json and a table on stdout (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "models" / "tunesmith-base"
# Random-init Llamas built from a config. "325m" (325.1M parameters) is the default workload:
# all three modes fit comfortably. "large" (855.7M) makes the weights dominate more, for LoRA vs
# QLoRA (full fine-tuning it would need about 14 GB).
MODELS = {
    "325m": dict(
        vocab_size=8192,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=24,
        num_attention_heads=16,
        num_key_value_heads=16,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    ),
    "large": dict(
        vocab_size=8192,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=16,
        num_attention_heads=16,
        num_key_value_heads=16,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    ),
}
WORDS = (
    "the a of to in is was for on with as by at from that this it be are or and not but kettle "
    "water tea boil warm cold red blue green small large fast slow one two three four five six "
    "seven eight nine ten hello thanks please yes no what when where how why which who answer "
    "question color number day night light dark sun moon router signal cable restart"
).split()


def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def build_assets(work: Path, size: str = "325m") -> tuple[Path, Path]:
    model_dir, data = work / "model", work / "train.jsonl"
    if not (model_dir / "model.safetensors").is_file():
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**MODELS[size]))
        model.save_pretrained(model_dir, safe_serialization=True)
        AutoTokenizer.from_pretrained(TOKENIZER).save_pretrained(model_dir)
        del model
    if not data.is_file():
        rng = random.Random(0)
        rows = []
        for _ in range(64):
            user = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))
            reply = " ".join(rng.choice(WORDS) for _ in range(rng.randint(150, 300)))
            rows.append(
                {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}
            )
        data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return model_dir, data


def run_config(work: Path, mode: str, model_dir: Path, data: Path, steps: int) -> dict:
    adapter = {"full": "none", "lora": "lora", "qlora": "qlora"}[mode]
    return {
        "model": str(model_dir),
        "data": {"train": str(data), "eval_fraction": 0.0},
        "adapter": {"type": adapter, "r": 16, "alpha": 32, "dropout": 0.05},
        "train": {
            "max_steps": steps,
            "batch_size": 1,
            "max_length": 512,
            "lr": 1e-4,
            "gradient_checkpointing": True,
            "save_every": 0,
            "eval_every": 0,
            "threads": 2,
            "progress": "none",
            "warmup_steps": 0,
        },
        "output_dir": str(work / "runs" / mode),
    }


def child(mode: str, work: Path, steps: int, size: str) -> None:
    """Train ``mode`` in this process; print one JSON line with its peak RSS."""
    import bitsandbytes  # noqa: F401  (imported by every mode so the runtime is the same)
    import peft  # noqa: F401
    import transformers  # noqa: F401

    from tunesmith.models.load import load_tokenizer
    from tunesmith.run import train

    model_dir, data = build_assets(work, size)
    load_tokenizer(str(model_dir))
    runtime_kb = rss_kb("VmRSS")
    t0 = time.time()
    result = train(run_config(work, mode, model_dir, data, steps), resume=False)
    print(
        "RESULT "
        + json.dumps(
            {
                "mode": mode,
                "peak_rss": rss_kb("VmHWM") * 1024,
                "runtime_rss": runtime_kb * 1024,
                "seconds": round(time.time() - t0, 1),
                "final_loss": result.final_loss,
            }
        ),
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="325m")
    ap.add_argument("--work", help="assets and results (default bench/out/memory, or memory-large)")
    ap.add_argument("--modes", default="full,lora,qlora")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(
        args.work or ROOT / "bench" / "out" / ("memory" if args.model == "325m" else f"memory-{args.model}")
    )
    work.mkdir(parents=True, exist_ok=True)
    if args.child:
        return child(args.child, work, args.steps, args.model)

    from tunesmith.config import load_config
    from tunesmith.models.memory import estimate_memory

    model_dir, data = build_assets(work, args.model)
    results = []
    for mode in args.modes.split(","):
        cfg = load_config(run_config(work, mode, model_dir, data, args.steps))
        est = estimate_memory(cfg, device="cpu")
        env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--work",
                str(work),
                "--steps",
                str(args.steps),
                "--model",
                args.model,
                "--child",
                mode,
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            sys.exit(f"{mode} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        row = json.loads(line[7:])
        row["estimate"] = est.to_dict()
        row["error"] = est.peak / row["peak_rss"] - 1
        results.append(row)
        print(
            f"{mode:6s} measured peak {row['peak_rss'] / 1e9:.2f} GB, estimate {est.peak / 1e9:.2f} GB "
            f"({100 * row['error']:+.1f}%), runtime {row['runtime_rss'] / 1e9:.2f} GB, "
            f"{row['seconds']:.0f} s",
            flush=True,
        )
    by = {r["mode"]: r for r in results}
    if "lora" in by and "qlora" in by:
        print(f"QLoRA peak / LoRA peak = {by['qlora']['peak_rss'] / by['lora']['peak_rss']:.1%}")
    (work / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
