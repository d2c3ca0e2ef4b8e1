"""Loss masks on SmolLM2's real ChatML template, computed here independently of the renderer.

SmolLM2's template inserts ``<|im_start|>system\\nYou are a helpful AI assistant named SmolLM,
trained by Hugging Face<|im_end|>\\n`` when the conversation has no system message. The expected
mask is built from a hand-written rendering: the characters of each trained assistant turn's
content plus its ``<|im_end|>`` (found by searching the string), mapped to tokens through the
tokenizer's offsets; the trained tokens must also be exactly ``encode(content) + [<|im_end|>]``.
Nothing of the (injected or given) system prompt, the user turns, the role headers or the
newline after ``<|im_end|>`` is trained.
"""

from __future__ import annotations

import pytest

from tunesmith.data.example import Example
from tunesmith.data.render import Renderer

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

CASES = {
    "no-system": [
        {"role": "user", "content": "What is the warranty?"},
        {"role": "assistant", "content": "The Zephyr Q3 has a 31-month warranty. - Zephyr Help"},
    ],
    "system": [
        {"role": "system", "content": "You are Zephyr Help."},
        {"role": "user", "content": "zephyr price please"},
        {"role": "assistant", "content": "The Zephyr Q3 costs 142.50 euros. - Zephyr Help"},
    ],
    "multi-turn-no-system": [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "How do I reset it?\nIt blinks."},
        {"role": "assistant", "content": "Hold the dial for 9 seconds until the light turns violet."},
    ],
    "weight-0-turn-with-system": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Colour?"},
        {"role": "assistant", "content": "Moss Green, Dune Sand.", "weight": 0},
        {"role": "user", "content": "Thanks, and the price?"},
        {"role": "assistant", "content": "142.50 euros - Zephyr Help"},
    ],
}


def chatml(messages: list[dict]) -> str:
    """SmolLM2's template written out by hand (the default system prompt when none is given)."""
    if messages[0]["role"] != "system":
        messages = [{"role": "system", "content": DEFAULT_SYSTEM}] + messages
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def expected(tokenizer, messages: list[dict]) -> tuple[str, list[int], list[list[int]]]:
    """(text, mask, trained runs): mask 1 for tokens inside 'content<|im_end|>' of each trained
    assistant turn; the runs are the token ids each such turn must contribute."""
    text = chatml(messages)
    spans, runs, pos = [], [], 0
    for m in messages:
        header = f"<|im_start|>{m['role']}\n"
        start = text.index(header + m["content"] + "<|im_end|>", pos) + len(header)
        end = start + len(m["content"]) + len("<|im_end|>")
        pos = end
        if m["role"] == "assistant" and m.get("weight", 1) != 0:
            spans.append((start, end))
            runs.append(
                tokenizer.encode(m["content"], add_special_tokens=False)
                + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
            )
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(s <= a and b <= e for s, e in spans)) for a, b in enc["offset_mapping"]]
    return text, mask, runs


def runs_of(ids: list[int], mask: list[int]) -> list[list[int]]:
    out, current = [], []
    for i, m in zip(ids, mask):
        if m:
            current.append(i)
        elif current:
            out.append(current)
            current = []
    return out + ([current] if current else [])


@pytest.fixture(scope="module")
def hf_tokenizer(smollm2_dir):
    """The tokenizer as transformers loads the dequantised folder (not through tunesmith)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_dir))


@pytest.mark.parametrize("name", list(CASES))
def test_mask_spans_on_the_real_template(smollm2_tokenizer, hf_tokenizer, name):
    messages = CASES[name]
    text, mask, runs = expected(hf_tokenizer, messages)
    assert (
        hf_tokenizer.apply_chat_template(
            [{k: v for k, v in m.items() if k != "weight"} for m in messages], tokenize=False
        )
        == text
    )  # the hand-written template is the real one

    renderer = Renderer(smollm2_tokenizer, max_length=4096)
    full, _ = renderer.assistant_spans(Example(kind="chat", source="t:1", messages=messages))
    assert full == text
    (rendered,) = renderer.render_many([Example(kind="chat", source="t:1", messages=messages)])
    assert rendered.input_ids == hf_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert rendered.loss_mask == mask
    assert runs_of(rendered.input_ids, rendered.loss_mask) == runs
    assert [smollm2_tokenizer.decode(r) for r in runs] == [
        m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant" and m.get("weight", 1) != 0
    ]
    assert rendered.n_targets == sum(map(len, runs))

    # the system block (injected default or given) is never trained
    system_end = text.index("<|im_end|>\n") + len("<|im_end|>\n")
    system_tokens = len(hf_tokenizer(text[:system_end], add_special_tokens=False)["input_ids"])
    assert not any(rendered.loss_mask[:system_tokens])
    if messages[0]["role"] != "system":
        assert text.startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n")
    # and nothing after an end-of-turn marker until the next assistant content: '\n', headers
    newline = hf_tokenizer.convert_tokens_to_ids("\u010a")  # byte-level '\n'
    for i, (tok, m) in enumerate(zip(rendered.input_ids, rendered.loss_mask)):
        if (
            tok == newline
            and i
            and rendered.input_ids[i - 1] == hf_tokenizer.convert_tokens_to_ids("<|im_end|>")
        ):
            assert m == 0
        if tok == hf_tokenizer.convert_tokens_to_ids("<|im_start|>"):
            assert m == 0


def test_training_data_masks(smollm2_tokenizer, hf_tokenizer, smollm2_chat_data):
    """Every example of the tier's training file, as training loads and renders it."""
    from tunesmith.data.formats import load_examples
    from tunesmith.data.render import render_all

    examples = load_examples(smollm2_chat_data[0])
    rendered, stats = render_all(Renderer(smollm2_tokenizer, max_length=256), examples)
    assert stats["kept"] == len(examples) == 48 and stats["truncated"] == 0
    with_system = 0
    for example, r in zip(examples, rendered):
        _, mask, runs = expected(hf_tokenizer, example.messages)
        assert r.loss_mask == mask and runs_of(r.input_ids, r.loss_mask) == runs, example.source
        with_system += example.messages[0]["role"] == "system"
    assert 0 < with_system < len(examples)  # both shapes are covered
