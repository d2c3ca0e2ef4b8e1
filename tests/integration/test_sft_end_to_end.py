"""SFT end to end on tiny models: learning, outputs, adapters, merge, model families."""

from __future__ import annotations

import json

import factory
import pytest
import torch
import yaml

import tunesmith
from tunesmith.export.merge import merge_adapter, probe_batch


def _cfg(model, data, out, **train):
    train_cfg = {
        "max_steps": 30,
        "batch_size": 8,
        "max_length": 128,
        "lr": 1e-2,
        "save_every": 0,
        "eval_every": 10,
        "eval_at_start": True,
        "progress": "none",
    }
    train_cfg.update(train)
    return {
        "model": str(model),
        "data": {"train": str(data[0]), "eval": str(data[1])},
        "adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "train": train_cfg,
        "output_dir": str(out),
    }


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, color_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora-run")
    result = tunesmith.train(_cfg(tiny_model_dir, color_data, out, max_steps=40, eval_every=20))
    return out, result


def test_lora_lowers_held_out_loss(lora_run):
    out, result = lora_run
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert [r["step"] for r in rows if "eval_loss" in r] == [0, 20, 40]
    assert evals[-1] < evals[1] < evals[0] - 0.5
    assert result.eval_loss == evals[-1]


def test_run_directory_contents(lora_run, tiny_model_dir):
    out, _ = lora_run
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(0, 41))
    for key in ("step", "loss", "lr", "tokens", "tokens_per_s", "tokens_total", "accuracy"):
        assert key in rows[1]
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert resolved["train"]["device"] == "cpu" and resolved["train"]["dtype"] == "fp32"
    assert (
        isinstance(resolved["adapter"]["targets"], list) and "lm_head" not in resolved["adapter"]["targets"]
    )
    assert set(resolved["adapter"]["targets"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    info = json.loads((out / "run.json").read_text())
    assert 0 < info["parameters"]["trainable"] < info["parameters"]["total"]
    assert info["versions"]["torch"] and len(info["data_fingerprint"]) == 16
    final = out / "final"
    assert (final / "adapter_config.json").is_file() and (final / "adapter_model.safetensors").is_file()
    assert (final / "tokenizer.json").is_file()
    assert "<|im_start|>" in (final / "chat_template.jinja").read_text()


def test_adapter_reloads_in_plain_peft_and_merge_matches(lora_run, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = lora_run
    tok = AutoTokenizer.from_pretrained(out / "final")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    plain = PeftModel.from_pretrained(base, out / "final").eval()
    batch = probe_batch(tok)
    with torch.no_grad():
        adapter_logits = plain(**batch).logits
    report = merge_adapter(str(out), str(tmp_path / "merged"))
    assert report["max_abs_diff"] <= 1e-4
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        merged_logits = merged(**batch).logits
    keep = batch["attention_mask"].bool()
    assert (merged_logits - adapter_logits).abs()[keep].max() <= 1e-4
    # The adapter changed the model: merged logits are not the base model's.
    with torch.no_grad():
        raw = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(**batch).logits
    assert (raw - merged_logits).abs()[keep].max() > 1e-2
    gen = json.loads((tmp_path / "merged" / "generation_config.json").read_text())
    assert tok.convert_tokens_to_ids("<|im_end|>") in gen["eos_token_id"]


def test_generation_uses_the_template_and_stops_at_end_of_turn(tiny_model_dir, color_data, tmp_path):
    """A briefly fully-tuned model answers in the trained shape and emits <|im_end|> by itself."""
    from tunesmith.models.generate import generate, load_for_inference

    cfg = _cfg(tiny_model_dir, color_data, tmp_path / "full", max_steps=40, lr=3e-3, eval_every=0)
    cfg["adapter"]["type"] = "none"
    tunesmith.train(cfg)
    model, tok = load_for_inference(str(tmp_path / "full"))
    replies = generate(model, tok, ["what color is the grass?", "what color is the snow?"], max_new_tokens=40)
    for reply in replies:
        assert reply.startswith("the ") and reply.endswith(".")
        assert len(tok.encode(reply)) < 20  # stopped at <|im_end|>, not at max_new_tokens


@pytest.mark.parametrize("adapter", ["dora", "none"])
def test_dora_and_full_fine_tuning_learn(adapter, tiny_model_dir, color_data, tmp_path):
    cfg = _cfg(
        tiny_model_dir, color_data, tmp_path / adapter, max_steps=20, lr=5e-3 if adapter == "dora" else 1e-3
    )
    cfg["adapter"]["type"] = adapter
    cfg["adapter"]["rslora"] = adapter == "dora"
    result = tunesmith.train(cfg)
    assert result.history[0]["step"] == 0
    assert result.eval_loss < result.history[0]["eval_loss"] - 0.3
    final = tmp_path / adapter / "final"
    if adapter == "none":
        assert (final / "model.safetensors").is_file() and (final / "config.json").is_file()
        assert (final / "generation_config.json").is_file()
    else:
        assert json.loads((final / "adapter_config.json").read_text())["use_dora"] is True


@pytest.mark.parametrize("arch", factory.ARCHS)
def test_every_model_family_trains(arch, tiny_tokenizer, color_data, tmp_path):
    model = tmp_path / "model"
    factory.build_model(model, arch, vocab_size=len(tiny_tokenizer))
    tiny_tokenizer.save_pretrained(model)
    result = tunesmith.train(
        _cfg(model, color_data, tmp_path / "run", max_steps=6, eval_every=3, max_length=48)
    )
    assert result.steps == 6 and result.eval_loss is not None
    assert result.history[-1]["eval_loss"] < result.history[0]["eval_loss"]


def test_cli_train_with_overrides(tiny_model_dir, color_data, tmp_path, fork_trainer):
    """``tunesmith train`` as a process (forked from the session's warm ``fork_trainer``): its
    stdout and stderr as a terminal that is not a tty would show them."""
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(_cfg(tiny_model_dir, color_data, tmp_path / "cli")))
    overrides = ["train.max_steps=3", "train.eval_every=0", "adapter.r=2", "train.progress=auto"]
    argv = ["train", str(cfg_path), *(arg for item in overrides for arg in ("--set", item))]
    rc, stdout = fork_trainer.run(argv, tmp_path / "stdout.txt", err=tmp_path / "stderr.txt")
    stderr = (tmp_path / "stderr.txt").read_text()
    assert rc == 0, stderr
    assert "trained 3 steps" in stdout
    resolved = yaml.safe_load((tmp_path / "cli" / "config.resolved.yaml").read_text())
    assert resolved["train"]["max_steps"] == 3 and resolved["adapter"]["r"] == 2
    assert "step 3/3" in stderr  # plain log lines when not a terminal
    assert "Loading weights" not in stderr and "Warning" not in stderr  # no third-party noise
