"""Resume after SIGKILL == uninterrupted, with data.train a weighted mixture of a JSON Lines
file (fields renamed by ``columns``) and a Parquet file: the mixture is drawn again by the
resumed process and must be the same, so every per-step metric matches bit for bit. The same
run stops early (train.early_stopping, real eval losses) and keeps its best checkpoint
(train.keep_best): the stopping step, the best step and the final adapter match too."""

from __future__ import annotations

import json

import factory
import pytest
from resume_harness import assert_resume_matches


def test_weighted_mixture_resumes_exactly(tmp_path, tiny_model_dir, fork_trainer):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    renamed = [{"conversation": row["messages"]} for row in factory.color_chats(60, seed=11)]
    a = factory.write_jsonl(tmp_path / "a.jsonl", renamed)
    b = tmp_path / "b.parquet"
    pq.write_table(pa.Table.from_pylist(factory.color_chats(200, seed=12)), b)
    cfg = {
        "model": str(tiny_model_dir),
        "data": {
            "train": [
                {"path": str(a), "weight": 0.7, "columns": {"messages": "conversation"}},
                {"path": str(b), "weight": 0.3},
            ],
            "eval_fraction": 0.05,
        },
        "adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.1},
        "train": {
            "max_steps": 40,
            "batch_size": 4,
            "max_length": 96,
            "lr": 2e-3,
            "save_every": 4,
            "eval_every": 4,
            "keep_last": 1,
            # min_delta this large: only the first evaluation improves, so training stops at the
            # third (step 12) — after the kill at 8, so the count must survive the resume
            "early_stopping": {"patience": 2, "min_delta": 100.0},
            "keep_best": True,
            "threads": 1,
            "progress": "lines",
        },
    }
    assert_resume_matches(fork_trainer, tmp_path, cfg, kill_after=8, steps=12)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    results = [json.loads((run / "run.json").read_text())["result"] for run in (ref, killed)]
    assert results[0]["stopped_early_at"] == 12
    for key in ("stopped_early_at", "best_step", "best_eval_loss", "final_from_step"):
        assert results[0][key] == results[1][key], key
    adapter = "final/adapter_model.safetensors"
    assert (ref / adapter).read_bytes() == (killed / adapter).read_bytes()
    # 5 % held out of each source first (3 of 60, 10 of 200), then 0.7 of 57 + 190 = 247 is
    # 172.9 -> 173 examples of a (largest remainder), 74 of b
    printed = (tmp_path / "ref.log").read_text()
    assert f"train mixture: 173 examples from {a} (57 available, weight 0.7)" in printed
    assert f"train mixture: 74 examples from {b} (190 available, weight 0.3)" in printed
