"""`auto` hyperparameters: the documented rule, worked through by hand."""

from __future__ import annotations

import pytest
import yaml

from tunesmith.config import load_config, validate
from tunesmith.config.auto import auto_batch_size, auto_epochs, auto_lr, auto_values
from tunesmith.config.resolve import RunFacts, resolve


@pytest.mark.parametrize(
    "n,epochs",
    [
        (1, 25),  # 3 × 1 < 100 -> min(25, 100 // 1)
        (10, 10),  # 3 × 10 < 100 -> 100 // 10
        (30, 3),  # 3 × 30 = 90 < 100 -> 100 // 30 = 3
        (34, 3),  # 3 × 34 = 102: within [100, 25 000] -> the target, 3
        (971, 3),
        (8_334, 2),  # 3 × 8 334 = 25 002 > 25 000 -> max(1, 25 000 // 8 334) = 2
        (10_000, 2),  # 25 000 // 10 000
        (30_000, 1),  # max(1, 25 000 // 30 000 = 0)
    ],
)
def test_epochs_follow_the_openai_heuristic(n, epochs):
    assert auto_epochs(n) == epochs


@pytest.mark.parametrize(
    "n,batch", [(10, 1), (971, 1), (1_000, 2), (4_000, 8), (7_999, 8), (20_000, 32), (10**6, 32)]
)
def test_batch_size_is_a_clamped_power_of_two(n, batch):
    assert auto_batch_size(n) == batch


def test_lr_by_adapter_and_resolution():
    assert auto_lr("lora") == 2e-4 and auto_lr("dora") == 2e-4 and auto_lr("none") == 2e-5
    cfg = load_config(
        {
            "model": "m",
            "data": {"train": "t"},
            "train": {"epochs": "auto", "lr": "auto", "batch_size": "auto"},
        }
    )
    validate(cfg)  # auto values are accepted before resolution
    assert auto_values(cfg.train, cfg.adapter.type, 4_000) == {"epochs": 3.0, "batch_size": 8, "lr": 2e-4}
    resolved = resolve(cfg, RunFacts(device="cpu", dtype="fp32", n_train=4_000))
    assert (resolved.train.epochs, resolved.train.batch_size, resolved.train.lr) == (3.0, 8, 2e-4)
    assert cfg.train.epochs == "auto"  # a new value; the loaded config is unchanged
    validate(resolved)


def test_auto_in_a_training_run(tiny_model_dir, color_data, tmp_path):
    import tunesmith

    result = tunesmith.train(
        {
            "model": str(tiny_model_dir),
            "data": {"train": str(color_data[0]), "eval_fraction": 0},
            "adapter": {"type": "none"},
            "train": {
                "epochs": "auto",
                "batch_size": "auto",
                "lr": "auto",
                "max_length": 64,
                "save_every": 0,
                "eval_every": 0,
                "progress": "none",
            },
            "output_dir": str(tmp_path / "auto"),
        }
    )
    resolved = yaml.safe_load((tmp_path / "auto" / "config.resolved.yaml").read_text())["train"]
    # 120 examples: 3 × 120 = 360 in range -> 3 epochs; 0.2 % of 120 -> batch 1; full FT -> 2e-5
    assert resolved["epochs"] == 3.0 and resolved["batch_size"] == 1 and resolved["lr"] == 2e-5
    assert result.steps == 360
    assert "auto hyperparameters" in (tmp_path / "auto" / "train.log").read_text()
