"""The exported model card names the base model (Hub id, GGUF file name, folder name), never a
local path, and states the hyperparameters from the run folder's record."""

from __future__ import annotations

import json

import pytest
import yaml

from tunesmith.export.card import model_card


def _run(tmp_path, model_path: str):
    run = tmp_path / "run"
    run.mkdir()
    resolved = {"method": "sft", "model": {"path": model_path}, "train": {"lr": 0.0003}}
    (run / "config.resolved.yaml").write_text(yaml.safe_dump(resolved))
    (run / "run.json").write_text(json.dumps({"data_fingerprint": "abc123"}))
    return run


def _front_matter(card: str) -> dict:
    return yaml.safe_load(card.split("---")[1])


@pytest.mark.parametrize(
    "base, name",
    [
        ("meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-1B"),
        ("/home/me/models/smollm2-135m-instruct.q4_1.gguf", "smollm2-135m-instruct.q4_1.gguf"),
        ("/home/me/models/my-qwen", "my-qwen"),
        ("/home/me/.cache/huggingface/hub/models--Qwen--Qwen2.5-0.5B/snapshots/abc", "Qwen/Qwen2.5-0.5B"),
    ],
)
def test_base_model_is_named_not_a_local_path(tmp_path, monkeypatch, base, name):
    monkeypatch.chdir(tmp_path)
    card = model_card({"base_model_name_or_path": base, "r": 8}, _run(tmp_path, base))
    assert _front_matter(card)["base_model"] == name
    assert f"| base model | `{name}` |" in card and f"# LoRA adapter for `{name}`" in card
    assert "/home/me" not in card
    assert "lr: 0.0003" in card and "abc123" in card
