#!/usr/bin/env python
"""tunesmith before and after a change, on the SFT bench's workload, in one invocation.

Runs the ``tunesmith`` setup of ``bench/sft_bench.py`` (same model, data, hyper-parameters and
child process) with two source trees: ``--before REV`` (extracted with ``git archive`` into
``bench/out/before-REV/src``) and the working tree, interleaved ``--repeats`` times, each in its
own fresh process with ``PYTHONPATH`` pointing at its tree. Reports, per tree: non-padding
tokens/s, useful GFLOP/s and its share of the fp32 matmul peak (measured in the same
invocation, before and after the runs), start → step 1, wall, peak RSS and the loss at every
step; then the after / before ratios, and whether the loss at each step is equal or lower.

    python bench/before_after.py --before dca5c86                       # 32M workload, 20 steps
    python bench/before_after.py --before dca5c86 --workload smollm2 --steps 12

Run it on a quiet machine (nothing else using the cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

import sft_bench  # noqa: E402  (the bench's children, assets and FLOP model)


def extract(rev: str, out: Path) -> Path:
    """``src/`` of ``rev`` under ``out/before-<rev>/src`` (reused when already there)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short=12", rev], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()
    root = out / f"before-{sha}"
    if not (root / "src" / "tunesmith").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha, "src"], cwd=REPO, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    return root / "src"


def run_tree(args, out: Path, label: str, src: Path) -> dict:
    """One tunesmith child with ``src`` first on its path."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(src)
    try:
        return sft_bench.run_child(args.python, "train", args, out, label, setup="tunesmith")
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def matmul_peak(args, out: Path, label: str) -> float:
    res = sft_bench.run_child(args.python, "matmul", args, out, label)
    if not res["ok"]:
        raise SystemExit(f"matmul measurement failed; see {res['log']}")
    return res["gflops_best"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="git revision to compare the working tree with")
    ap.add_argument("--workload", choices=sft_bench.WORKLOADS, default="32m")
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per run (default 20)")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved runs per tree (default 1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args(argv)
    default_out = BENCH_DIR / "out" if args.workload == "32m" else BENCH_DIR / "out" / args.workload
    out = default_out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    if os.getloadavg()[0] > 0.5:
        print(f"warning: load average {os.getloadavg()[0]:.2f}: the machine is busy", file=sys.stderr)
    manifest = sft_bench.ensure_assets(args, out)
    sft_bench.warm_page_cache(manifest["paths"]["model"])
    flops = sft_bench.flop_model(manifest)
    trees = {"before": extract(args.before, out), "after": REPO / "src"}
    peaks = [matmul_peak(args, out, "matmul-start")]
    runs: dict[str, list[dict]] = {k: [] for k in trees}
    for rep in range(args.repeats):
        for label, src in trees.items():
            res = run_tree(args, out, f"{label}-{rep}", src)
            if not res["ok"]:
                print("\n".join(res["error_tail"]), file=sys.stderr)
                raise SystemExit(f"{label} run failed; see {res['log']}")
            summary = sft_bench.summarize_run(res, flops)
            summary["losses"] = [s["loss"] for s in res["steps"]]
            runs[label].append(summary)
            print(
                f"{label} #{rep + 1}: {summary['nonpad_tokens_per_s']:.0f} tok/s, "
                f"start->step1 {summary['first_step_s']:.1f} s, loss {summary['last_loss']:.4f}",
                flush=True,
            )
    peaks.append(matmul_peak(args, out, "matmul-end"))
    peak = max(peaks)
    table = {}
    for label, rs in runs.items():
        med = {
            k: statistics.median(r[k] for r in rs)
            for k in ("nonpad_tokens_per_s", "useful_gflops", "first_step_s", "wall_s", "peak_rss_mb")
        }
        med["share_of_peak"] = med["useful_gflops"] / peak
        med["losses"] = rs[0]["losses"]
        table[label] = med
    b, a = table["before"], table["after"]
    steps_lower = [round(y - x, 6) for x, y in zip(b["losses"], a["losses"])]
    result = {
        "before": args.before,
        "workload": args.workload,
        "steps": args.steps,
        "threads": args.threads,
        "repeats": args.repeats,
        "matmul_peak_gflops": peaks,
        "trees": table,
        "ratios": {
            "tokens_per_s": a["nonpad_tokens_per_s"] / b["nonpad_tokens_per_s"],
            "first_step_s": a["first_step_s"] / b["first_step_s"],
            "peak_rss_mb": a["peak_rss_mb"] / b["peak_rss_mb"],
        },
        "loss_after_minus_before": steps_lower,
        "machine": sft_bench.machine_info(),
    }
    name = "before_after.json"
    (out / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nfp32 matmul peak (best of start/end): {peak:.1f} GFLOP/s, {args.threads} threads")
    print("| tree | tok/s | useful GFLOP/s | % of matmul peak | start->step1 s | wall s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for label, m in table.items():
        print(
            f"| {label} | {m['nonpad_tokens_per_s']:.0f} | {m['useful_gflops']:.1f} | "
            f"{100 * m['share_of_peak']:.0f} % | {m['first_step_s']:.1f} | {m['wall_s']:.1f} | {m['peak_rss_mb']:.0f} |"
        )
    r = result["ratios"]
    print(
        f"after / before: tokens/s {r['tokens_per_s']:.2f}x, start->step1 {r['first_step_s']:.2f}x, "
        f"peak RSS {r['peak_rss_mb']:.2f}x"
    )
    worst = max(steps_lower)
    print(
        f"loss after - before per step: max {worst:+.2e} ({'equal or lower' if worst <= 1e-4 else 'HIGHER'})"
    )
    print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
