"""The base model shipped in models/tunesmith-base loads, and its chat template round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

MODEL = Path(__file__).resolve().parents[2] / "models" / "tunesmith-base"
CONVERSATION = [
    {"role": "system", "content": "You are Kettle Care."},
    {"role": "user", "content": "How long is the warranty?"},
    {"role": "assistant", "content": "The Lumen K2 has a 27-month warranty."},
    {"role": "user", "content": "Thanks!"},
]


@pytest.fixture(scope="module")
def tok():
    from tunesmith.models.load import load_tokenizer

    return load_tokenizer(str(MODEL))


def test_special_tokens_are_single_ids(tok):
    for text in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"):
        assert len(tok.encode(text, add_special_tokens=False)) == 1, text
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>"


def test_chat_template_round_trip(tok):
    text = tok.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are Kettle Care.<|im_end|>\n")
    assert text.endswith("<|im_start|>user\nThanks!<|im_end|>\n<|im_start|>assistant\n")
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 5  # 4 messages + generation prompt


def test_stop_tokens_and_mask_on_the_shipped_template(tok):
    from tunesmith.data.example import Example
    from tunesmith.data.render import Renderer
    from tunesmith.models.template import stop_token_ids

    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert stop_token_ids(tok) == [im_end, tok.eos_token_id]
    r = Renderer(tok, max_length=512)(Example(kind="chat", source="x:1", messages=CONVERSATION[:3]))
    trained = [t for t, m in zip(r.input_ids, r.loss_mask) if m]
    assert tok.decode(trained, skip_special_tokens=False) == "The Lumen K2 has a 27-month warranty.<|im_end|>"


def test_weights_load_and_generate(tok):
    from tunesmith.models.generate import generate, load_for_inference

    config = json.loads((MODEL / "config.json").read_text())
    assert config["model_type"] == "llama" and config["vocab_size"] == len(tok)
    model, tokenizer = load_for_inference(str(MODEL))
    n = sum(p.numel() for p in model.parameters())
    assert 3e6 < n < 25e6
    text = "This section describes how to install the package on your system and how to configure it."
    ids = torch.tensor([tokenizer.encode(text)])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    # A uniform guess costs ln(8192) = 9.0 nats per token; the pretrained model is far below.
    assert torch.isfinite(loss) and loss.item() < 5.0
    (reply,) = generate(model, tokenizer, ["Hello, who are you?"], max_new_tokens=16)
    assert isinstance(reply, str)
    card = (MODEL / "README.md").read_text()
    assert "perplexity" in card and "MODEL_CARD_SOURCES.md" in card
