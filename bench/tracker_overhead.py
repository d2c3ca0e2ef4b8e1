"""What reporting one metrics row costs the training loop, per tracker (``train.report_to``).

Opens each installed tracker on a scratch folder (offline: W&B offline mode, MLflow's default
SQLite store, trackio's local store, TensorBoard event files), hands it ROWS rows shaped like a
training step's, and prints the mean time per row as the loop sees it (MLflow's writes are
queued; closing the run waits for them and is not counted).

    PYTHONPATH=src .venv/bin/python bench/tracker_overhead.py
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

ROWS = 200
ROW = {
    "epoch": 0.01,
    "loss": 2.07,
    "lr": 4.0e-4,
    "tokens": 312,
    "tokens_total": 1024,
    "tokens_per_s": 33.4,
    "accuracy": 0.61,
    "grad_norm": 0.42,
    "step_time_s": 9.3,
}


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="tracker-overhead-"))
    os.environ.update(
        WANDB_MODE="offline",
        WANDB_DIR=str(scratch),
        TRACKIO_DIR=str(scratch / "trackio"),
        MLFLOW_TRACKING_URI=f"sqlite:///{scratch}/mlflow.db",
    )
    from tunesmith.config import load_config
    from tunesmith.config.trackers import TRACKERS
    from tunesmith.engine.trackers import open_trackers

    for name, (module, _) in TRACKERS.items():
        if importlib.util.find_spec(module) is None:
            print(f"{name:12s} not installed", file=sys.stderr)
            continue
        out = scratch / name
        out.mkdir()
        cfg = load_config({"train": {"report_to": [name]}, "output_dir": str(out)})
        trackers = open_trackers(cfg, out, None)
        t0 = time.perf_counter()
        for step in range(1, ROWS + 1):
            trackers.metrics({"step": step, **ROW})
        per_row = (time.perf_counter() - t0) / ROWS * 1000
        trackers.finish()
        print(f"{name:12s} {per_row:.2f} ms per row ({ROWS} rows)")


if __name__ == "__main__":
    main()
