"""``train.heap`` in a real run: what the run applies, logs and records, and that the policy
changes no number (docs/training.md, "Speed or memory: the heap")."""

from __future__ import annotations

import json
import logging
import platform

import pytest

import tunesmith
from tunesmith import rundir
from tunesmith.config import load_config

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


def _run(tiny_model_dir, color_data, out, caplog, **train):
    cfg = {
        "model": str(tiny_model_dir),
        "data": {"train": str(color_data[0]), "eval_fraction": 0},
        "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "train": {
            "max_steps": 3,
            "batch_size": 4,
            "max_length": 96,
            "lr": 1e-2,
            "save_every": 0,
            "progress": "none",
            "seed": 3,
            **train,
        },
        "output_dir": str(out),
    }
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tunesmith"):
        tunesmith.train(cfg, resume=False)
    resolved = load_config(str(rundir.RunDir(out).resolved_config))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    heap_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("heap: ")]
    return resolved.train.heap, heap_lines, [(r["loss"], r.get("grad_norm")) for r in rows if "loss" in r]


def test_auto_fast_unless_checkpointing_and_losses_bit_identical(
    tiny_model_dir, color_data, tmp_path, caplog, monkeypatch
):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    heap, lines, fast = _run(tiny_model_dir, color_data, tmp_path / "auto", caplog)
    assert heap == "fast" and lines == ["heap: fast (auto)"]
    heap, lines, compact = _run(tiny_model_dir, color_data, tmp_path / "compact", caplog, heap="compact")
    assert heap == "compact" and lines == ["heap: compact (train.heap)"]
    assert compact == fast and len(fast) == 3  # the allocator never changes a computed number
    heap, lines, _ = _run(tiny_model_dir, color_data, tmp_path / "ckpt", caplog, gradient_checkpointing=True)
    assert heap == "compact" and lines == ["heap: compact (auto: gradient checkpointing)"]
    # the estimate line in the log counts fast's slack only
    heap, _, _ = _run(tiny_model_dir, color_data, tmp_path / "auto2", caplog)
    assert any("heap slack" in r.getMessage() for r in caplog.records)


def test_the_operators_threshold_wins(tiny_model_dir, color_data, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    heap, lines, _ = _run(tiny_model_dir, color_data, tmp_path / "env", caplog)
    assert lines == ["heap: glibc's mmap threshold from the environment (train.heap fast not applied)"]
