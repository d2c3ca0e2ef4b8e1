"""After 10 LoRA steps on SmolLM2 (base named by its .gguf): ``tunesmith merge`` writes a model
whose logits equal base + adapter, and the adapter reloads with plain PEFT over the dequantised
folder (no tunesmith code) to the same logits as tunesmith's own loader.

The reference is built here from transformers + PEFT only: ``AutoModelForCausalLM`` over the
cache folder and ``PeftModel.from_pretrained(base, RUN/final)``.
"""

from __future__ import annotations

import json

import pytest
import torch

CHAT = [
    {"role": "user", "content": "Tell me the warranty of the Zephyr Q3."},
    {"role": "assistant", "content": "The Zephyr Q3 has a 31-month warranty. - Zephyr Help"},
]


@pytest.fixture(scope="module")
def batch(smollm2_dir):
    """Two rows of different lengths (right-padded): one with SmolLM2's injected system prompt,
    one with a system message of its own."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm2_dir))
    texts = [
        tok.apply_chat_template(CHAT, tokenize=False),
        tok.apply_chat_template(
            [{"role": "system", "content": "You are Zephyr Help."}, CHAT[0]],
            tokenize=False,
            add_generation_prompt=True,
        ),
    ]
    return tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)


@pytest.fixture(scope="module")
def plain_peft(smollm2_dir, smollm2_lora_run):
    """transformers + PEFT only, over the dequantised folder: (base logits, base+adapter model)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32).eval()
    return PeftModel.from_pretrained(base, str(smollm2_lora_run / "final")).eval()


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return out[batch["attention_mask"].bool()]  # real positions only


def test_adapter_names_the_gguf_and_changed_the_model(smollm2_lora_run, smollm2_gguf, plain_peft, batch):
    config = json.loads((smollm2_lora_run / "final" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(smollm2_gguf)
    assert config["r"] == 8 and config["peft_type"] == "LORA"
    tuned = logits(plain_peft, batch)
    with plain_peft.disable_adapter():
        base = logits(plain_peft, batch)
    assert (tuned - base).abs().max() > 0.5  # 10 steps at lr 2e-3 moved the model


def test_plain_peft_reload_equals_tunesmith_loader(smollm2_lora_run, plain_peft, batch):
    from tunesmith.models.generate import load_for_inference

    ours, tokenizer = load_for_inference(str(smollm2_lora_run))  # the run folder; base from the adapter
    assert tokenizer.chat_template and "SmolLM" in tokenizer.chat_template
    torch.testing.assert_close(logits(ours, batch), logits(plain_peft, batch), atol=1e-4, rtol=0)


def test_merge_equals_base_plus_adapter(smollm2_lora_run, plain_peft, batch, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from tunesmith.cli import main

    out = tmp_path / "merged"
    assert main(["merge", str(smollm2_lora_run), "--out", str(out)]) == 0
    assert "verified" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    assert not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged, batch), logits(plain_peft, batch), atol=1e-3, rtol=0)
