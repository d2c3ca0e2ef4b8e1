#!/usr/bin/env python
"""The quickstart: fine-tune SmolLM2-135M-Instruct on the support dataset, then compare.

1. ``tunesmith.train(examples/quickstart/lora.yaml)``: LoRA on the real pretrained model, named
   by its GGUF file (dequantised once into tunesmith's cache; ``scripts/setup.sh`` links it).
2. ``tunesmith eval`` of the run against its base on the held-out questions (phrasings never
   seen in training): greedy answers; a question counts as answered when the reply contains every
   keyword of its fact (``keywords``), and as in house style when it ends with the sign-off
   (``regex``); 95 % bootstrap intervals and the paired difference; ``report.html``.
3. A before/after table, a few answers side by side, and ``runs/quickstart/quickstart.json``.

    python examples/quickstart/run.py [--set train.epochs=1 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROWS = (("keywords", "facts answered (all keywords)"), ("regex", "house style (sign-off)"))


def _count(metric: dict, n: int) -> str:
    return f"{round(metric['value'] * n)}/{n} [{100 * metric['low']:.0f}-{100 * metric['high']:.0f}%]"


def print_summary(report: dict, train_s: float, eval_s: float, steps: int) -> None:
    tuned, base = (m["name"] for m in report["models"])
    metrics, n = report["metrics"], report["settings"]["examples"]
    print(f"\n=== tunesmith quickstart: SmolLM2-135M-Instruct, base vs tuned on {n} held-out questions ===")
    print(f"{'metric':<34}{'base':>22}{'tuned':>22}")
    for key, label in ROWS:
        print(f"{label:<34}{_count(metrics[base][key], n):>22}{_count(metrics[tuned][key], n):>22}")
    diff = report["comparisons"][0]["metrics"]["keywords"]
    print(
        f"tuned - base, facts answered: {100 * diff['diff']:+.1f} points "
        f"[{100 * diff['low']:+.1f}, {100 * diff['high']:+.1f}] (paired bootstrap, 95 %)"
    )
    print(f"training: {steps} steps in {train_s:.0f} s (incl. loading); evaluation {eval_s:.0f} s\n")
    rows = report["examples"]
    won = [r for r in rows if r["scores"][tuned].get("keywords") and not r["scores"][base].get("keywords")]
    for r in (won or rows)[:3]:
        print("Q:", r["prompt"].rsplit("user: ", 1)[-1])
        print("  base :", r["answers"][base][:160].replace("\n", " "))
        print("  tuned:", r["answers"][tuned][:160].replace("\n", " "))


def main() -> int:
    ap = argparse.ArgumentParser(description="tunesmith quickstart")
    ap.add_argument("--config", default=str(ROOT / "examples" / "quickstart" / "lora.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--heldout", default=str(ROOT / "examples" / "support" / "heldout.jsonl"))
    args = ap.parse_args()

    os.chdir(ROOT)  # the config's paths are relative to the repository root
    t0 = time.time()
    import tunesmith
    from tunesmith.config import load_config
    from tunesmith.eval.evaluate import run_eval
    from tunesmith.eval.runner import EvalOptions

    cfg = load_config(args.config, args.set)
    result = tunesmith.train(cfg, resume=False)
    t1 = time.time()
    options = EvalOptions(max_new_tokens=40, batch_size=50, likelihood=False)
    report = run_eval(
        cfg.output_dir,
        args.heldout,
        compare_with=["base"],
        options=options,
        out_dir=Path(cfg.output_dir) / "eval",
    )
    t2 = time.time()
    print_summary(report, t1 - t0, t2 - t1, result.steps)
    tuned, base = (m["name"] for m in report["models"])
    summary = {
        "heldout": report["settings"]["examples"],
        "steps": result.steps,
        "train_seconds": round(t1 - t0, 1),
        "eval_seconds": round(t2 - t1, 1),
        "total_seconds": round(t2 - t0, 1),
        **{
            f"{who}_{key}": report["metrics"][name][key]
            for who, name in (("base", base), ("tuned", tuned))
            for key in ("keywords", "regex")
        },
    }
    out = Path(cfg.output_dir) / "quickstart.json"
    out.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(f"\nreport: {report['out_dir']}/report.html   summary: {out}   total {t2 - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
