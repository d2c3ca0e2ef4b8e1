"""DPO (sigmoid loss, LoRA) for three steps on SmolLM2 named by its GGUF file: the reference is
the base with the adapter disabled, so the first step's rewards are exactly zero; afterwards the
policy has moved away from it (non-zero rewards, chosen rising above rejected), the loss stays
finite and the adapter is saved."""

from __future__ import annotations

import json
import math

import pytest


@pytest.fixture(scope="module")
def smollm2_pairs(smollm2_chat_data, tmp_path_factory):
    """Six preference pairs over the tier's chats: the house-style answer against a refusal."""
    import factory

    rows = []
    for line in smollm2_chat_data[0].read_text(encoding="utf-8").splitlines()[:6]:
        *prompt, answer = json.loads(line)["messages"]
        rows.append(
            {
                "prompt": prompt,
                "chosen": [answer],
                "rejected": [{"role": "assistant", "content": "Sorry, I do not know that."}],
            }
        )
    return factory.write_jsonl(tmp_path_factory.mktemp("smollm2-pairs") / "pairs.jsonl", rows)


def test_dpo_steps_on_smollm2(smollm2_gguf, smollm2_pairs, tmp_path):
    import tunesmith

    out = tmp_path / "dpo"
    result = tunesmith.train(
        {
            "model": str(smollm2_gguf),
            "method": "dpo",
            "data": {"train": str(smollm2_pairs), "eval_fraction": 0.0},
            "adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
            "preference": {"loss": "sigmoid", "beta": 0.1},
            "train": {
                "max_steps": 3,
                "batch_size": 2,
                "max_length": 96,
                "lr": 5e-3,
                "packing": False,
                "save_every": 0,
                "eval_every": 0,
                "progress": "none",
            },
            "output_dir": str(out),
        },
        resume=False,
    )

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3] and result.steps == 3
    assert all(math.isfinite(r["loss"]) for r in steps)
    first, last = steps[0], steps[-1]
    # step 1 scores the untouched policy: it is the reference, every reward is 0 and the loss log 2
    assert first["rewards_chosen"] == 0.0 and first["rewards_rejected"] == 0.0
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    # two updates later the rewards have moved, in the preferred direction
    assert abs(last["rewards_chosen"]) > 1e-3 and abs(last["rewards_rejected"]) > 1e-3
    assert last["margin"] > 0 and last["loss"] < math.log(2)
    assert (out / "final" / "adapter_model.safetensors").is_file()
