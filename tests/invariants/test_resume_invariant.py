"""SIGKILL after a checkpoint, resume, and every per-step metric (losses, eval losses) equals an
uninterrupted run's — for LoRA and for QLoRA (whose 4-bit base is re-quantised from the same
weights on resume)."""

from __future__ import annotations

import importlib.util

import factory
import pytest
from resume_harness import assert_resume_matches

# (adapter type, steps, eval every, checkpoint to kill after)
CASES = [
    pytest.param(("lora", 24, 6, 8), id="lora"),
    pytest.param(
        ("qlora", 12, 3, 4),
        id="qlora",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed"
        ),
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, tiny_tokenizer, fork_trainer, case):
    adapter, steps, eval_every, kill_after = case
    model = tmp_path / "model"
    factory.build_model(
        model,
        "llama",
        vocab_size=len(tiny_tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
    )
    tiny_tokenizer.save_pretrained(model)
    data = factory.write_jsonl(tmp_path / "train.jsonl", factory.color_chats(200, seed=5))
    cfg = {
        "model": str(model),
        "data": {"train": str(data), "eval_fraction": 0.1},
        "adapter": {"type": adapter, "r": 8, "alpha": 16, "dropout": 0.1},
        "train": {
            "max_steps": steps,
            "batch_size": 4,
            "max_length": 96,
            "lr": 2e-3,
            "save_every": 4,
            "eval_every": eval_every,
            "keep_last": 2,
            "threads": 1,
            "progress": "lines",
        },
    }
    assert_resume_matches(fork_trainer, tmp_path, cfg, kill_after, steps)
