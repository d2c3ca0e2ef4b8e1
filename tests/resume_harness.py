"""Kill-and-resume for the resume invariants: run ``tunesmith train`` as a real process,
SIGKILL it right after a checkpoint commits, resume it, and read back its metrics rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

TIMING = ("tokens_per_s", "step_time_s")  # wall-clock fields: the only ones allowed to differ


def write_config(tmp_path: Path, name: str, cfg: dict) -> Path:
    """``cfg`` with ``output_dir = tmp_path/name``, written to ``tmp_path/name.yaml``."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**cfg, "output_dir": str(tmp_path / name)}))
    return path


def train_cli(config: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "tunesmith", "train", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)


def run_to_end(config: Path) -> str:
    proc = train_cli(config)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


def kill_after_checkpoint(config: Path, run_dir: Path, step: int) -> None:
    """Start training and SIGKILL it as soon as checkpoint ``step`` is committed."""
    proc = train_cli(config)
    marker = run_dir / "checkpoints" / f"step-{step:06d}" / "COMMITTED"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert not (run_dir / "final").exists()


def metric_rows(run_dir: Path) -> dict[int, dict]:
    """``metrics.jsonl`` by step, without the wall-clock fields."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: {k: v for k, v in r.items() if k not in TIMING} for r in rows}


def assert_resume_matches(tmp_path: Path, cfg: dict, kill_after: int, steps: int) -> None:
    """The invariant: uninterrupted run == killed after checkpoint ``kill_after`` + resumed,
    every metric of every step bit for bit (CPU fp32), eval rows included."""
    run_to_end(write_config(tmp_path, "ref", cfg))
    killed = write_config(tmp_path, "killed", cfg)
    kill_after_checkpoint(killed, tmp_path / "killed", kill_after)
    assert "resumed from" in run_to_end(killed)
    expected, got = metric_rows(tmp_path / "ref"), metric_rows(tmp_path / "killed")
    assert sorted(got) == list(range(1, steps + 1))
    assert got == expected
