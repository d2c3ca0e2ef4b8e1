"""QLoRA end to end on a tiny model: held-out loss falls, the 4-bit base stays bitwise frozen
(evaluation in between steps included), the adapter merges into the dequantised base within
tolerance, and ``tunesmith estimate`` reports full / LoRA / QLoRA."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

pytest.importorskip("bitsandbytes")


def _snapshot(model) -> dict[str, tuple]:
    from tunesmith.models.quantize import quantized_linears

    out = {}
    for name, m in quantized_linears(model).items():
        qs = m.weight.quant_state
        out[name] = (m.weight.data.clone(), qs.absmax.clone(), qs.state2.absmax.clone())
    return out


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory, tiny_model_dir, color_data):
    from tunesmith.run import prepare, save_final

    train, heldout = color_data
    out = tmp_path_factory.mktemp("qlora") / "run"
    cfg = {
        "model": str(tiny_model_dir),
        "data": {"train": str(train), "eval": str(heldout)},
        "adapter": {"type": "qlora", "r": 8, "alpha": 16, "dropout": 0.0},
        "train": {
            "max_steps": 24,
            "batch_size": 4,
            "max_length": 96,
            "lr": 3e-3,
            "eval_every": 8,
            "eval_at_start": True,
            "save_every": 0,
            "progress": "none",
            "threads": 1,
        },
        "output_dir": str(out),
    }
    run = prepare(cfg)
    before = _snapshot(run.model)
    result = run.trainer.fit()
    save_final(run.model, run.tokenizer, out / "final", run.cfg)
    return run, before, result, out


def test_qlora_lowers_heldout_loss_and_base_is_bitwise_frozen(qlora_run):
    run, before, result, out = qlora_run
    evals = [r["eval_loss"] for r in result.history if "eval_loss" in r]
    assert len(evals) == 4  # step 0 baseline, 8, 16, 24: evaluation ran between training steps
    assert evals[-1] < evals[0] - 0.5
    after = _snapshot(run.model)
    assert len(after) == 14 and after.keys() == before.keys()
    for name, tensors in before.items():
        assert all(torch.equal(a, b) for a, b in zip(tensors, after[name])), name
    trainable = {n: p for n, p in run.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert all(p.dtype == torch.float32 for p in trainable.values())
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert resolved["model"]["load_in_4bit"] is True and resolved["model"]["compute_dtype"] == "fp32"


def test_qlora_merge_dequantizes_and_verifies(qlora_run, tmp_path):
    from safetensors.torch import load_file

    from tunesmith.export.merge import merge_adapter

    _, _, _, out = qlora_run
    report = merge_adapter(str(out), str(tmp_path / "merged"))
    assert report["max_abs_diff"] <= 1e-3 and "4-bit nf4" in report["dequantized_from"]
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "quantization_config" not in config
    weights = load_file(tmp_path / "merged" / "model.safetensors")
    assert all(w.dtype == torch.float32 for w in weights.values())
    assert not any("lora" in k or "absmax" in k for k in weights)


def test_estimate_cli(tmp_path, tiny_model_dir, color_data, capsys):
    from tunesmith.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": str(tiny_model_dir),
                "data": {"train": str(color_data[0])},
                "adapter": {"type": "qlora"},
                "train": {"max_length": 128},
            }
        )
    )
    assert main(["estimate", str(cfg)]) == 0
    text = capsys.readouterr().out
    assert "qlora*" in text and "full" in text and "lora" in text and "activations" in text
    assert main(["estimate", str(cfg), "--json", "--no-compare"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["mode"] == "qlora" and row["peak"] > row["weights"] > 0
