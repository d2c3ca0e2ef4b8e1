"""QLoRA: SIGKILL after a checkpoint, resume (the 4-bit base is re-quantised from the same
weights), and the per-step losses equal an uninterrupted run's, evaluation included."""

from __future__ import annotations

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

pytest.importorskip("bitsandbytes")


def _config(tmp_path: Path, model: Path, data: Path, out: str) -> Path:
    cfg = {"model": str(model), "data": {"train": str(data), "eval_fraction": 0.1},
           "adapter": {"type": "qlora", "r": 8, "alpha": 16, "dropout": 0.1},
           "train": {"max_steps": 12, "batch_size": 4, "max_length": 96, "lr": 2e-3, "save_every": 4,
                     "eval_every": 3, "keep_last": 2, "threads": 1, "progress": "lines"},
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


def test_qlora_sigkill_then_resume_matches_uninterrupted(tmp_path, tiny_tokenizer):
    model = tmp_path / "model"
    factory.build_model(model, "llama", vocab_size=len(tiny_tokenizer), hidden_size=128,
                        intermediate_size=256, num_hidden_layers=4)
    tiny_tokenizer.save_pretrained(model)
    data = factory.write_jsonl(tmp_path / "train.jsonl", factory.color_chats(200, seed=5))

    ref = _cli(_config(tmp_path, model, data, "ref"))
    assert ref.wait(timeout=300) == 0, ref.stdout.read()

    cfg = _config(tmp_path, model, data, "killed")
    proc = _cli(cfg)
    marker = tmp_path / "killed" / "checkpoints" / "step-000004" / "COMMITTED"
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
    assert sorted(got) == list(range(1, 13))
    assert got == expected  # bitwise-equal floats on CPU fp32, eval losses included
