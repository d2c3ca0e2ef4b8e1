#!/usr/bin/env python
"""Start-up before and after a change, and against TRL, in one invocation.

Process start -> first optimizer step (the parent's clock, taken just before it starts each child
process), for:

- the SFT bench (``bench/sft_bench.py``'s 32M workload, 1 step): the ``--before`` tree, the
  working tree with a cold render cache and with a warm one, the working tree without packing
  (warm: its first step trains the same 8 examples as TRL's, where the packed first step trains
  8 rows of 512 tokens, about 2.3x the tokens), and TRL ``SFTTrainer`` padding-free (the peer
  venv); each also with its first step's own time taken out ("step 1 excluded": imports,
  loading, rendering, set-up);
- the quickstart's training (``examples/quickstart/lora.yaml``, SmolLM2-135M from its GGUF,
  1 step): the ``--before`` tree, the working tree cold and warm;
- ``tunesmith --help``: both trees.

Each measure is the median of ``--repeats`` interleaved runs, each in a fresh process with
``PYTHONPATH`` pointing at its tree. Every child uses one tunesmith cache folder
(``bench/out/startup/cache``; the GGUF's dequantised copy is made there once, unmeasured);
"cold" deletes its ``render/`` entries before the run, "warm" follows a run on the same data.

    python bench/startup_bench.py --before dca5c86 --python-peer .venv-bench/bin/python

Run it on a quiet machine (nothing else using the cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

import sft_bench  # noqa: E402
from before_after import extract  # noqa: E402

QUICKSTART = REPO / "examples" / "quickstart" / "lora.yaml"


def child_quickstart(result: str, run_dir: str, t0: float) -> None:
    """In the child: the quickstart's training for one step, timed from ``t0``."""
    os.chdir(REPO)  # the config's paths are relative to the repository root
    import tunesmith
    from tunesmith.config import load_config

    cfg = load_config(str(QUICKSTART), ["train.max_steps=1", f"output_dir={run_dir}", "train.progress=none"])
    res = tunesmith.train(cfg, resume=False, process_start=t0)
    Path(result).write_text(json.dumps({"first_step_s": res.first_step_s, "file": tunesmith.__file__}))


def run_quickstart(python: str, src: Path, out: Path, label: str) -> float:
    result, run_dir = out / "logs" / f"{label}.json", out / "runs" / label
    result.unlink(missing_ok=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.time()
    cmd = [python, __file__, "--child-quickstart", str(result), str(run_dir), repr(t0)]
    with open(out / "logs" / f"{label}.log", "w") as log:
        code = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO).returncode
    if code != 0:
        raise SystemExit(f"quickstart child {label} failed; see {out / 'logs' / f'{label}.log'}")
    data = json.loads(result.read_text())
    if not data["file"].startswith(str(src)):
        raise SystemExit(f"{label} ran {data['file']}, not the tree under {src}")
    return data["first_step_s"]


def run_bench(args, src: Path | None, out: Path, label: str, setup: str = "tunesmith") -> tuple[float, float]:
    """(process start -> first optimizer step, that first step's own time) of one SFT bench child."""
    saved = os.environ.get("PYTHONPATH")
    if src is not None:
        os.environ["PYTHONPATH"] = str(src)
    try:
        python = args.python if setup in sft_bench.TUNESMITH_SETUPS else args.python_peer
        res = sft_bench.run_child(python, "train", args, out, label, setup=setup)
    finally:
        os.environ.pop("PYTHONPATH", None) if saved is None else os.environ.update(PYTHONPATH=saved)
    if not res["ok"]:
        print("\n".join(res.get("error_tail", [])), file=sys.stderr)
        raise SystemExit(f"{label} failed; see {res['log']}")
    return res["first_step_s"], res["steps"][0]["in_step_s"]


def run_help(python: str, src: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.time()
    subprocess.run([python, "-m", "tunesmith", "--help"], env=env, check=True, capture_output=True)
    return time.time() - t0


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child-quickstart":
        child_quickstart(sys.argv[2], sys.argv[3], float(sys.argv[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="git revision to compare the working tree with")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs per variant (default 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--python-peer", default=str(REPO / ".venv-bench" / "bin" / "python"))
    ap.add_argument("--skip-quickstart", action="store_true")
    args = ap.parse_args(argv)
    args.steps, args.workload, args.rebuild = 1, "32m", False
    out = (BENCH_DIR / "out").resolve()
    work = out / "startup"
    (work / "logs").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    os.environ["TUNESMITH_CACHE_DIR"] = str(cache)  # every child's tunesmith cache
    if os.getloadavg()[0] > 0.5:
        print(f"warning: load average {os.getloadavg()[0]:.2f}: the machine is busy", file=sys.stderr)
    manifest = sft_bench.ensure_assets(args, out)
    sft_bench.warm_page_cache(manifest["paths"]["model"])
    trees = {"before": extract(args.before, out), "after": REPO / "src"}
    if not args.skip_quickstart:  # unmeasured: the GGUF's dequantised copy into the bench cache
        run_quickstart(args.python, trees["after"], work, "prime")

    def cold() -> None:
        shutil.rmtree(cache / "render", ignore_errors=True)

    times: dict[str, list[float]] = {}
    for rep in range(args.repeats):
        plan = [
            ("bench before", lambda: run_bench(args, trees["before"], out, "startup-before")),
            ("bench after cold", lambda: (cold(), run_bench(args, trees["after"], out, "startup-cold"))[1]),
            ("bench after warm", lambda: run_bench(args, trees["after"], out, "startup-warm")),
            # The same first step as TRL's (8 examples, padding-free, no packing): the packed
            # setup's first step trains 8 rows of 512 tokens, about 2.3x TRL's first step's tokens.
            (
                "bench after warm nopack",
                lambda: run_bench(args, trees["after"], out, "startup-nopack", "tunesmith-nopack"),
            ),
            ("bench trl-padding-free", lambda: run_bench(args, None, out, "startup-trl", "trl-padding-free")),
        ]
        if not args.skip_quickstart:
            plan += [
                (
                    "quickstart before",
                    lambda: run_quickstart(args.python, trees["before"], work, "qs-before"),
                ),
                (
                    "quickstart after cold",
                    lambda: (cold(), run_quickstart(args.python, trees["after"], work, "qs-cold"))[1],
                ),
                (
                    "quickstart after warm",
                    lambda: run_quickstart(args.python, trees["after"], work, "qs-warm"),
                ),
            ]
        plan += [
            ("--help before", lambda: run_help(args.python, trees["before"])),
            ("--help after", lambda: run_help(args.python, trees["after"])),
        ]
        for name, fn in plan:
            seconds = fn()
            if isinstance(seconds, tuple):  # an SFT bench child: also its start-up without step 1
                seconds, step = seconds
                times.setdefault(f"{name}, step 1 excluded", []).append(seconds - step)
            times.setdefault(name, []).append(seconds)
            print(f"#{rep + 1} {name}: {seconds:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = {
        "bench after cold / before": med["bench after cold"] / med["bench before"],
        "bench after warm / before": med["bench after warm"] / med["bench before"],
        "bench after cold / trl": med["bench after cold"] / med["bench trl-padding-free"],
        "bench after warm / trl": med["bench after warm"] / med["bench trl-padding-free"],
        "bench before / trl": med["bench before"] / med["bench trl-padding-free"],
        "bench after warm nopack / trl (same first step)": med["bench after warm nopack"]
        / med["bench trl-padding-free"],
        "bench after warm / trl, step 1 excluded": med["bench after warm, step 1 excluded"]
        / med["bench trl-padding-free, step 1 excluded"],
        "--help after / before": med["--help after"] / med["--help before"],
    }
    if not args.skip_quickstart:
        ratios["quickstart after cold / before"] = med["quickstart after cold"] / med["quickstart before"]
        ratios["quickstart after warm / before"] = med["quickstart after warm"] / med["quickstart before"]
    result = {
        "before": args.before,
        "repeats": args.repeats,
        "threads": args.threads,
        "seconds": times,
        "median_s": med,
        "ratios": ratios,
        "machine": sft_bench.machine_info(),
    }
    (work / "startup.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nprocess start -> first optimizer step, median of {args.repeats} (seconds)")
    print("| measure | seconds |\n|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.2f} |")
    print("\n| ratio | |\n|---|---|")
    for k, v in ratios.items():
        print(f"| {k} | {v:.2f}x |")
    print(f"wrote {work / 'startup.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
