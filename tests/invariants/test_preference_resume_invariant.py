"""DPO: SIGKILL after a checkpoint, resume, and every per-step loss and metric equals an
uninterrupted run's (CPU fp32), for the adapter-disabled reference and for the precomputed one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import factory


def _config(tmp_path: Path, model: Path, data: Path, out: str, adapter: str) -> Path:
    cfg = {"model": str(model), "method": "dpo", "data": {"train": str(data), "eval_fraction": 0.1},
           "adapter": {"type": adapter, "r": 8, "alpha": 16, "dropout": 0.1},
           "preference": {"beta": 0.2},
           "train": {"max_steps": 8, "batch_size": 4, "max_length": 64, "lr": 2e-3, "save_every": 4,
                     "eval_every": 3, "keep_last": 2, "threads": 1, "progress": "lines"},
           "output_dir": str(tmp_path / out)}
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cli(config: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "tunesmith", "train", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)


def _rows(run_dir: Path) -> dict[int, dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    drop = ("tokens_per_s", "step_time_s")
    return {r["step"]: {k: v for k, v in r.items() if k not in drop} for r in rows}


@pytest.mark.parametrize("adapter", ["lora", "none"])
def test_dpo_sigkill_then_resume_matches_uninterrupted(tmp_path, tiny_tokenizer, adapter):
    model = tmp_path / "model"
    factory.build_model(model, "llama", vocab_size=len(tiny_tokenizer), hidden_size=96,
                        intermediate_size=192, num_hidden_layers=3)
    tiny_tokenizer.save_pretrained(model)
    data = factory.write_jsonl(tmp_path / "train.jsonl", factory.preference_pairs(80, seed=5))

    ref = _cli(_config(tmp_path, model, data, "ref", adapter))
    assert ref.wait(timeout=300) == 0, ref.stdout.read()

    cfg = _config(tmp_path, model, data, "killed", adapter)
    proc = _cli(cfg)
    marker = tmp_path / "killed" / "checkpoints" / "step-000004" / "COMMITTED"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"

    resumed = _cli(cfg)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "resumed from" in out
    expected, got = _rows(tmp_path / "ref"), _rows(tmp_path / "killed")
    assert sorted(got) == list(range(1, 9))
    assert got == expected  # bitwise-equal losses, accuracies, margins, log-probs
