"""DPO: SIGKILL after a checkpoint, resume, and every per-step loss and metric (accuracies,
margins, log-probs) equals an uninterrupted run's (CPU fp32), for the adapter-disabled
reference and for the precomputed one."""

from __future__ import annotations

import factory
import pytest
from resume_harness import assert_resume_matches


@pytest.mark.parametrize("adapter", ["lora", "none"])
def test_dpo_sigkill_then_resume_matches_uninterrupted(tmp_path, tiny_tokenizer, fork_trainer, adapter):
    model = tmp_path / "model"
    factory.build_model(
        model,
        "llama",
        vocab_size=len(tiny_tokenizer),
        hidden_size=96,
        intermediate_size=192,
        num_hidden_layers=3,
    )
    tiny_tokenizer.save_pretrained(model)
    data = factory.write_jsonl(tmp_path / "train.jsonl", factory.preference_pairs(80, seed=5))
    cfg = {
        "model": str(model),
        "method": "dpo",
        "data": {"train": str(data), "eval_fraction": 0.1},
        "adapter": {"type": adapter, "r": 8, "alpha": 16, "dropout": 0.1},
        "preference": {"beta": 0.2},
        "train": {
            "max_steps": 8,
            "batch_size": 4,
            "max_length": 64,
            "lr": 2e-3,
            "save_every": 4,
            "eval_every": 3,
            "keep_last": 2,
            "threads": 1,
            "progress": "lines",
        },
    }
    assert_resume_matches(fork_trainer, tmp_path, cfg, 4, 8)
