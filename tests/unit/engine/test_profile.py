"""``train.profile_steps`` / ``tunesmith train --profile``: where a step's time goes."""

from __future__ import annotations

import json

import torch

import tunesmith
from tunesmith.engine.profile import CATEGORIES, attribute, format_report
from tunesmith.models.forward import profile_scope


def test_profiled_run_splits_step_time_into_categories(tiny_model_dir, color_data, tmp_path, caplog):
    cfg = {
        "model": str(tiny_model_dir),
        "data": {"train": str(color_data[0])},
        "adapter": {"type": "lora", "r": 4, "alpha": 8},
        "train": {"max_steps": 4, "batch_size": 4, "max_length": 64, "profile_steps": 2, "progress": "lines"},
        "output_dir": str(tmp_path / "run"),
    }
    with caplog.at_level("INFO", logger="tunesmith"):
        tunesmith.train(cfg)
    report = json.loads((tmp_path / "run" / "profile.json").read_text())
    assert report["profiled_steps"] == [2, 3]
    rows = {r["category"]: r for r in report["categories"]}
    assert list(rows) == list(CATEGORIES)
    for category in ("attention", "lora", "base", "lm_head_loss", "optimizer", "data"):
        assert rows[category]["seconds"] > 0, category
    assert 0.97 < sum(r["share"] for r in rows.values()) < 1.03
    assert rows["base"]["gflop_per_s"] > 0 and rows["lora"]["gflop_per_s"] > 0
    assert report["matmul_peak_gflop_per_s"] > 0
    assert "LoRA matmuls" in caplog.text and "s per step" in caplog.text


def test_backward_time_follows_the_forward_scope_that_created_it():
    """An op's backward is attributed to the scope its forward ran in, by sequence number."""
    a = torch.randn(256, 256, requires_grad=True)
    b = torch.randn(256, 256)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True) as prof:
        with profile_scope("step"):
            with profile_scope("lora"):
                y = a @ b
            with profile_scope("base"):
                z = torch.relu(y)
            z.sum().backward()
    split = attribute(prof.events())
    assert split["steps"] == 1
    # forward a @ b (2·256³) and its backward (one mm: only a needs a gradient) are LoRA's
    assert split["flops"]["lora"] == 2 * 2 * 256**3
    assert split["seconds"]["base"] > 0 and not split["flops"].get("other")
    text = format_report(
        {
            "profiled_steps": [2],
            "step_wall_s": 1.0,
            "matmul_gflop": 1.0,
            "matmul_gflop_per_s": 1.0,
            "matmul_peak_gflop_per_s": 2.0,
            "categories": [
                {"category": c, "label": c, "seconds": 0.1, "share": 0.1, "gflop_per_s": None}
                for c in CATEGORIES
            ],
        }
    )
    assert "(50 %)" in text
