"""Loss masks derived from real public chat templates (no {% generation %} markers)."""

from __future__ import annotations

from pathlib import Path

import factory
import pytest

from tunesmith.data.example import Example
from tunesmith.data.render import Renderer
from tunesmith.errors import DataError

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "chat_templates"

# template file -> (special tokens, bos, eos, expected trained spans for CONVERSATION)
TEMPLATES = {
    "qwen2_5": (
        ["<|im_start|>", "<|im_end|>"],
        None,
        "<|im_end|>",
        ["Hello! How can I help?<|im_end|>", "Two plus two is four.<|im_end|>"],
    ),
    "llama3": (
        ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|begin_of_text|>",
        "<|eot_id|>",
        ["Hello! How can I help?<|eot_id|>", "Two plus two is four.<|eot_id|>"],
    ),
    "mistral_v03": (
        ["<s>", "</s>", "[INST]", "[/INST]"],
        "<s>",
        "</s>",
        [" Hello! How can I help?</s>", " Two plus two is four.</s>"],
    ),
    "mistral_nemo": (
        ["<s>", "</s>", "[INST]", "[/INST]"],
        "<s>",
        "</s>",
        ["Hello! How can I help?</s>", "Two plus two is four.</s>"],
    ),
    "gemma": (
        ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"],
        "<bos>",
        "<eos>",
        ["Hello! How can I help?<end_of_turn>", "Two plus two is four.<end_of_turn>"],
    ),
    # Phi-3 appends <|endoftext|> (eos) after the final message only.
    "phi3": (
        ["<|user|>", "<|assistant|>", "<|end|>", "<|system|>"],
        None,
        "<|endoftext|>",
        ["Hello! How can I help?<|end|>", "Two plus two is four.<|end|>\n<|endoftext|>"],
    ),
}

CONVERSATION = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Two plus two is four."},
]
SYSTEM = {"role": "system", "content": "You are terse."}


def _tokenizer(tmp_path, name):
    specials, bos, eos, _ = TEMPLATES[name]
    tok = factory.build_tokenizer(
        tmp_path / name,
        vocab_size=400,
        extra_special=specials,
        chat_template=(ASSETS / f"{name}.jinja").read_text(encoding="utf-8"),
    )
    if bos:
        tok.bos_token = bos
    tok.eos_token = eos
    return tok


def _trained_spans(tok, rendered) -> list[str]:
    spans, current = [], []
    for tid, m in zip(rendered.input_ids, rendered.loss_mask):
        if m:
            current.append(tid)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    return [tok.decode(s, skip_special_tokens=False) for s in spans]


def _chat(messages):
    return Example(kind="chat", source="data.jsonl:7", messages=messages)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_exact_assistant_spans(tmp_path, name):
    tok = _tokenizer(tmp_path, name)
    with_system = name not in ("gemma", "mistral_v03", "mistral_nemo")
    messages = ([SYSTEM] if with_system else []) + CONVERSATION
    rendered = Renderer(tok, max_length=4096)(_chat(messages))
    assert _trained_spans(tok, rendered) == TEMPLATES[name][3]
    # Everything else (system, user turns, headers, generation prompts) is untrained.
    assert sum(rendered.loss_mask) == sum(
        len(tok.encode(s, add_special_tokens=False)) for s in TEMPLATES[name][3]
    )


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_weight_zero_turn_is_untrained(tmp_path, name):
    tok = _tokenizer(tmp_path, name)
    messages = [dict(m) for m in CONVERSATION]
    messages[1]["weight"] = 0
    rendered = Renderer(tok, max_length=4096)(_chat(messages))
    assert _trained_spans(tok, rendered) == TEMPLATES[name][3][1:]


def test_template_that_moves_the_system_prompt_fails_loudly(tmp_path):
    tok = _tokenizer(tmp_path, "mistral_v03")
    with pytest.raises(DataError) as err:
        Renderer(tok, max_length=4096, template_name="mistral_v03.jinja")(_chat([SYSTEM] + CONVERSATION))
    msg = str(err.value)
    assert "data.jsonl, line 7" in msg and "mistral_v03.jinja" in msg and "prefix-preserving" in msg


def test_template_rejecting_a_role_names_the_line(tmp_path):
    tok = _tokenizer(tmp_path, "gemma")
    with pytest.raises(DataError, match=r"data.jsonl, line 7.*System role not supported"):
        Renderer(tok, max_length=4096)(_chat([SYSTEM] + CONVERSATION))


def test_train_on_all_tokens_and_truncation(tiny_tokenizer):
    ex = _chat([SYSTEM] + CONVERSATION)
    full = Renderer(tiny_tokenizer, max_length=4096, train_on_all_tokens=True)(ex)
    assert all(full.loss_mask) and not full.truncated
    short = Renderer(tiny_tokenizer, max_length=10)(ex)
    assert short.truncated and len(short.input_ids) == 10
    assert short.input_ids == full.input_ids[:10]


def test_completion_and_text_examples(tiny_tokenizer):
    r = Renderer(tiny_tokenizer, max_length=4096)
    comp = r(Example(kind="completion", source="x:1", prompt="the sky is", completion=" blue"))
    n_prompt = len(tiny_tokenizer.encode("the sky is"))
    assert comp.loss_mask == [0] * n_prompt + [1] * (len(comp.input_ids) - n_prompt)
    assert comp.input_ids[-1] == tiny_tokenizer.eos_token_id
    text = r(Example(kind="text", source="x:2", text="hello world"))
    assert all(text.loss_mask) and text.input_ids[-1] == tiny_tokenizer.eos_token_id


# -- templates shipped by name (model.chat_template: NAME) --------------------------------------
# name -> (special tokens, bos, eos, expected trained spans for SYSTEM + CONVERSATION). Every named
# template accepts a system message and keeps each turn's rendering fixed as the chat grows.
NAMED = {
    "chatml": (
        [],
        None,
        "<|endoftext|>",
        ["Hello! How can I help?<|im_end|>", "Two plus two is four.<|im_end|>"],
    ),
    "qwen": TEMPLATES["qwen2_5"],
    "llama3": TEMPLATES["llama3"],
    "mistral": (
        ["<s>", "</s>", "[INST]", "[/INST]"],
        "<s>",
        "</s>",
        [" Hello! How can I help?</s>", " Two plus two is four.</s>"],
    ),
    "gemma": TEMPLATES["gemma"],
    "phi3": (
        ["<|user|>", "<|assistant|>", "<|end|>", "<|system|>"],
        None,
        "<|endoftext|>",
        ["Hello! How can I help?<|end|>", "Two plus two is four.<|end|>"],
    ),
}


def test_every_named_template_is_checked_here():
    from tunesmith.models.named_templates import NAMES

    assert set(NAMED) == set(NAMES)


def _named_tokenizer(tmp_path, name):
    """The tokenizer as a run loads it: a template-less tokenizer + model.chat_template: NAME."""
    from tunesmith.models.load import load_tokenizer

    specials, bos, eos, _ = NAMED[name]
    factory.build_tokenizer(tmp_path / name, vocab_size=400, extra_special=specials, chat_template="")
    tok = load_tokenizer(str(tmp_path / name), name)
    if bos:
        tok.bos_token = bos
    tok.eos_token = eos
    return tok


@pytest.mark.parametrize("with_system", [True, False], ids=["system", "no-system"])
@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_template_exact_assistant_spans(tmp_path, name, with_system):
    tok = _named_tokenizer(tmp_path, name)
    messages = ([SYSTEM] if with_system else []) + CONVERSATION
    rendered = Renderer(tok, max_length=4096, template_name=name)(_chat(messages))
    assert _trained_spans(tok, rendered) == NAMED[name][3]
    assert sum(rendered.loss_mask) == sum(
        len(tok.encode(s, add_special_tokens=False)) for s in NAMED[name][3]
    )
    text = tok.decode(rendered.input_ids, skip_special_tokens=False)
    assert ("You are terse." in text) == with_system  # the system prompt is rendered, never dropped
    if bos := NAMED[name][1]:
        assert text.startswith(bos) and text.count(bos) == 1


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_template_weight_zero_turn_is_untrained(tmp_path, name):
    tok = _named_tokenizer(tmp_path, name)
    messages = [SYSTEM] + [dict(m) for m in CONVERSATION]
    messages[2]["weight"] = 0
    rendered = Renderer(tok, max_length=4096, template_name=name)(_chat(messages))
    assert _trained_spans(tok, rendered) == NAMED[name][3][1:]


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_template_generation_prompt_and_stop_token(tmp_path, name):
    """What generation sees: the prompt render ends where the trained reply starts, and the
    end-of-turn marker the masks train is the token generation stops at."""
    from tunesmith.models.template import render_chat, stop_token_ids

    tok = _named_tokenizer(tmp_path, name)
    prompt = render_chat(tok, [SYSTEM, CONVERSATION[0]], add_generation_prompt=True)
    full = render_chat(tok, [SYSTEM] + CONVERSATION[:2])
    assert full.startswith(prompt) and full[len(prompt) :].lstrip().startswith("Hello! How can I help?")
    end_of_turn = NAMED[name][3][0].split("?")[-1]
    assert stop_token_ids(tok)[0] == tok.convert_tokens_to_ids(end_of_turn)
