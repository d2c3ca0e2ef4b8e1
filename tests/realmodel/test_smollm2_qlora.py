"""QLoRA on SmolLM2 named by its GGUF file: the dequantised fp32 weights are loaded again in
4-bit NF4 (bitsandbytes, on CPU here), two steps train, the loss is finite and the adapter is
saved in PEFT format with the .gguf as its base."""

from __future__ import annotations

import json
import math

import pytest
import yaml

pytest.importorskip("bitsandbytes")


def test_qlora_steps_on_smollm2(smollm2_gguf, smollm2_chat_data, tmp_path):
    import tunesmith

    out = tmp_path / "qlora"
    result = tunesmith.train(
        {
            "model": str(smollm2_gguf),
            "method": "sft",
            "data": {"train": str(smollm2_chat_data[0]), "eval_fraction": 0.0},
            "adapter": {"type": "qlora", "r": 8, "alpha": 16, "dropout": 0.0},
            "train": {
                "max_steps": 2,
                "batch_size": 2,
                "max_length": 64,
                "lr": 2e-3,
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
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(x) and 0 < x < 20 for x in losses), losses
    assert result.steps == 2 and math.isfinite(result.final_loss)
    final = out / "final"
    assert (final / "adapter_model.safetensors").stat().st_size > 0
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(smollm2_gguf) and adapter["r"] == 8
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert resolved["model"]["load_in_4bit"] is True and resolved["model"]["quant_type"] == "nf4"
    info = json.loads((out / "run.json").read_text())
    assert "Q4_1" in json.dumps(info)  # run.json records the GGUF source and its quantisation
