"""SIGKILL after a checkpoint, resume, and the per-step losses equal an uninterrupted run's —
for LoRA and for QLoRA (whose 4-bit base is re-quantised from the same weights on resume)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

import factory
import pytest

# (adapter type, steps, eval every, checkpoint to kill after)
CASES = [pytest.param(("lora", 24, 6, 8), id="lora"),
         pytest.param(("qlora", 12, 3, 4), id="qlora", marks=pytest.mark.skipif(
             importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed"))]


def _config(tmp_path: Path, model: Path, data: Path, out: str, adapter: str, steps: int, eval_every: int) -> Path:
    cfg = {"model": str(model), "data": {"train": str(data), "eval_fraction": 0.1},
           "adapter": {"type": adapter, "r": 8, "alpha": 16, "dropout": 0.1},
           "train": {"max_steps": steps, "batch_size": 4, "max_length": 96, "lr": 2e-3, "save_every": 4,
                     "eval_every": eval_every, "keep_last": 2, "threads": 1, "progress": "lines"},
           "output_dir": str(tmp_path / out)}
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cli(config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "tunesmith", "train", str(config), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)


def _losses(run_dir: Path) -> dict[int, tuple]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: (r["loss"], r.get("eval_loss")) for r in rows}


@pytest.mark.parametrize("case", CASES)
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, tiny_tokenizer, case):
    adapter, steps, eval_every, kill_after = case
    model = tmp_path / "model"
    factory.build_model(model, "llama", vocab_size=len(tiny_tokenizer), hidden_size=128,
                        intermediate_size=256, num_hidden_layers=4)
    tiny_tokenizer.save_pretrained(model)
    data = factory.write_jsonl(tmp_path / "train.jsonl", factory.color_chats(200, seed=5))

    ref = _cli(_config(tmp_path, model, data, "ref", adapter, steps, eval_every))
    assert ref.wait(timeout=300) == 0, ref.stdout.read()

    cfg = _config(tmp_path, model, data, "killed", adapter, steps, eval_every)
    proc = _cli(cfg)
    marker = tmp_path / "killed" / "checkpoints" / f"step-{kill_after:06d}" / "COMMITTED"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert not (tmp_path / "killed" / "final").exists()

    resumed = _cli(cfg)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "resumed from" in out
    expected, got = _losses(tmp_path / "ref"), _losses(tmp_path / "killed")
    assert sorted(got) == list(range(1, steps + 1))
    assert got == expected  # bitwise-equal floats on CPU fp32, eval losses included
