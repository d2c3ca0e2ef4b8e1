"""Preference-data methods on 2 processes equal 1 process: DPO (LoRA, adapter-disabled
reference) with DDP and FSDP2, and a reward model (scalar head) with FSDP2."""

from __future__ import annotations

import factory
import pytest
from ranks import assert_same_run, run, write_config

from tunesmith.run import train

STEPS = 4
KEYS = (
    "loss",
    "accuracy",
    "margin",
    "logps_chosen",
    "logps_rejected",
    "grad_norm",
    "eval_loss",
    "eval_accuracy",
)


def _config(tmp_path, model, data, name: str, **train_over) -> dict:
    return {
        "model": str(model),
        "method": "dpo",
        "data": {"train": str(data[0]), "eval": str(data[1])},
        "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "preference": {"beta": 0.5},
        "train": {
            "max_steps": STEPS,
            "batch_size": 2,
            "grad_accum": 1,
            "max_length": 48,
            "lr": 5e-3,
            "save_every": 0,
            "eval_every": 2,
            "threads": 1,
            "progress": "lines",
            "seed": 2,
            **train_over,
        },
        "output_dir": str(tmp_path / name),
    }


@pytest.fixture(scope="module")
def dpo_setup(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("dpo")
    data = (
        factory.write_jsonl(tmp / "train.jsonl", factory.preference_pairs(40, seed=3)),
        factory.write_jsonl(tmp / "eval.jsonl", factory.preference_pairs(6, seed=4)),
    )
    train(_config(tmp, tiny_model_dir, data, "ref", grad_accum=2), resume=False)
    return data, tmp / "ref"


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_dpo_two_ranks_equal_one(tmp_path, tiny_model_dir, dpo_setup, fork_trainer, mode):
    data, reference = dpo_setup
    rc, out = run(fork_trainer, write_config(_config(tmp_path, tiny_model_dir, data, mode, parallel=mode)))
    assert rc == 0, out
    assert_same_run(tmp_path / mode, reference, STEPS, KEYS)


def test_dpo_full_finetune_fsdp_two_ranks_equal_one(tmp_path, tiny_model_dir, dpo_setup, fork_trainer):
    """Full fine-tuning: reference log-probs precomputed before training (rank 0 first, then
    rank 1 from its cache file), the final weights gathered from the FSDP shards."""
    data, _ = dpo_setup

    def cfg(name, **over):
        return {
            **_config(tmp_path, tiny_model_dir, data, name, max_steps=3, lr=1e-3, **over),
            "adapter": {"type": "none"},
        }

    train(cfg("full-ref", grad_accum=2), resume=False)
    rc, out = run(fork_trainer, write_config(cfg("full-fsdp", parallel="fsdp")))
    assert rc == 0, out
    assert "reference log-probs: scoring" in out
    assert_same_run(tmp_path / "full-fsdp", tmp_path / "full-ref", 3, KEYS)


def test_reward_model_fsdp_two_ranks_equal_one(tmp_path, tiny_model_dir, dpo_setup, fork_trainer):
    """A reward model's score head is [1, hidden]: sharded over 2 ranks one shard is empty
    (uneven FSDP sharding), and the gathered head must still save and match."""
    data, _ = dpo_setup

    def cfg(name, **over):
        return {
            **_config(tmp_path, tiny_model_dir, data, name, max_steps=3, **over),
            "method": "reward",
            "preference": {},
        }

    train(cfg("reward-ref", grad_accum=2), resume=False)
    rc, out = run(fork_trainer, write_config(cfg("reward-fsdp", parallel="fsdp")))
    assert rc == 0, out
    assert_same_run(
        tmp_path / "reward-fsdp",
        tmp_path / "reward-ref",
        3,
        ("loss", "accuracy", "margin", "grad_norm", "eval_loss", "eval_accuracy"),
    )
