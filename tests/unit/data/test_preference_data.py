"""Preference / KTO rows: formats, validation errors with file/line/field, rendering, truncation."""

from __future__ import annotations

import factory
import pytest

from tunesmith.data.preference import PairRenderer, load_pairs, load_unpaired, render_pairs, render_unpaired
from tunesmith.errors import DataError

Q = [{"role": "user", "content": "what color is the sky?"}]
A = [{"role": "assistant", "content": "blue."}]
B = [{"role": "assistant", "content": "green."}]


def _write(tmp_path, rows, name="d.jsonl"):
    return str(factory.write_jsonl(tmp_path / name, rows))


def test_all_pair_shapes_normalise_to_the_same_pair(tmp_path):
    rows = [
        {"prompt": Q, "chosen": A, "rejected": B},
        {"input": {"messages": Q}, "preferred_output": A, "non_preferred_output": B},
        {"prompt": Q, "chosen": "blue.", "rejected": "green."},  # string answers
        {"prompt": "what color is the sky?", "chosen": A, "rejected": B},  # string prompt
        {"chosen": Q + A, "rejected": Q + B},
    ]  # implicit prompt
    for i, row in enumerate(rows):
        (pair,) = load_pairs([_write(tmp_path, [row], f"{i}.jsonl")])
        assert (pair.prompt, pair.chosen, pair.rejected) == (Q, A, B), row
    (raw,) = load_pairs([_write(tmp_path, [{"prompt": "q", "chosen": "a", "rejected": "b", "margin": 2}])])
    assert (raw.prompt, raw.chosen, raw.rejected, raw.margin) == ("q", "a", "b", 2.0)


@pytest.mark.parametrize(
    "row,line_field,text",
    [
        (
            {"prompt": Q, "chosen": [{"role": "user", "content": "x"}], "rejected": B},
            "chosen[0].role",
            "assistant",
        ),
        ({"prompt": Q, "chosen": A, "rejected": 3}, "rejected", "string or an array"),
        ({"prompt": Q, "chosen": A, "rejected": B, "margin": "big"}, "margin", "number"),
        (
            {"input": {"messages": [{"role": "user"}]}, "preferred_output": A, "non_preferred_output": B},
            "input.messages[0].content",
            "string",
        ),
        ({"chosen": "a", "rejected": "b"}, "prompt", "missing"),
    ],
)
def test_pair_errors_name_line_and_field(tmp_path, row, line_field, text):
    good = {"prompt": Q, "chosen": A, "rejected": B}
    if "input" in row:
        good = {"input": {"messages": Q}, "preferred_output": A, "non_preferred_output": B}
    path = _write(tmp_path, [good, row])
    with pytest.raises(DataError) as err:
        load_pairs([path])
    assert err.value.line == 2 and err.value.field == line_field and text in str(err.value)


def test_wrong_format_suggests_the_method(tmp_path):
    with pytest.raises(DataError, match="method sft"):
        load_pairs([_write(tmp_path, [{"messages": Q + A}])])
    with pytest.raises(DataError, match="method kto"):
        load_pairs([_write(tmp_path, [{"prompt": "q", "completion": "a", "label": True}])])
    with pytest.raises(DataError) as err:
        load_unpaired([_write(tmp_path, [{"prompt": "q", "completion": "a", "label": "yes"}])])
    assert err.value.field == "label"


def test_kto_rows_and_pairs_as_unpaired(tmp_path):
    rows = load_unpaired(
        [
            _write(
                tmp_path,
                [
                    {"prompt": Q, "completion": A, "label": True},
                    {"prompt": "q", "completion": "a", "label": False},
                ],
            )
        ]
    )
    assert [(r.completion, r.label) for r in rows] == [(A, True), ("a", False)]
    pairs = load_unpaired([_write(tmp_path, [{"prompt": Q, "chosen": A, "rejected": B}], "p.jsonl")])
    assert [(r.completion, r.label) for r in pairs] == [(A, True), (B, False)]


def test_chat_pair_renders_prompt_once_and_each_answer_as_its_continuation(tiny_tokenizer, tmp_path):
    r = PairRenderer(tiny_tokenizer, max_length=256)
    (item,), stats = render_pairs(r, load_pairs_rows(tmp_path, [{"prompt": Q, "chosen": A, "rejected": B}]))
    prompt_text = tiny_tokenizer.apply_chat_template(Q, tokenize=False, add_generation_prompt=True)
    assert tiny_tokenizer.decode(item.prompt_ids) == prompt_text
    assert tiny_tokenizer.decode(item.first_ids) == "blue.<|im_end|>"  # trailing newline is formatting
    assert tiny_tokenizer.decode(item.second_ids) == "green.<|im_end|>"
    # the same tokens as rendering the whole conversation (ChatML splits cleanly after "assistant\n")
    full = tiny_tokenizer.apply_chat_template(Q + A, tokenize=False).rstrip("\n")
    assert item.prompt_ids + item.first_ids == tiny_tokenizer(full, add_special_tokens=False)["input_ids"]
    assert stats["identical"] == 0 and stats["truncated"] == 0


def test_raw_pair_appends_eos_and_truncation_keeps_the_prompt_end(tiny_tokenizer, tmp_path):
    r = PairRenderer(tiny_tokenizer, max_length=8)
    long_prompt = " ".join(["water"] * 20)
    (item,), stats = render_pairs(
        r,
        load_pairs_rows(
            tmp_path, [{"prompt": long_prompt, "chosen": "tea tea tea tea tea tea", "rejected": "no"}]
        ),
    )
    assert len(item.prompt_ids) == 4  # max_length // 2, from the end
    assert len(item.prompt_ids) + len(item.first_ids) <= 8 and stats["truncated"] == 1
    assert item.second_ids[-1] == tiny_tokenizer.eos_token_id


def test_kto_kl_completion_is_the_next_examples(tiny_tokenizer):
    rows = [
        {"prompt": "q1", "completion": "aa", "label": True},
        {"prompt": "q2", "completion": "bb", "label": False},
        {"prompt": "q3", "completion": "cc", "label": True},
    ]
    from tunesmith.data.preference import UnpairedExample

    ex = [UnpairedExample(f"f:{i}", r["prompt"], r["completion"], r["label"]) for i, r in enumerate(rows)]
    items, stats = render_unpaired(PairRenderer(tiny_tokenizer, 64), ex)
    firsts = [it.first_ids for it in items]
    assert [it.second_ids for it in items] == firsts[1:] + firsts[:1]
    assert [it.label for it in items] == [True, False, True] and stats["desirable"] == 2


def test_template_that_is_not_prefix_preserving_fails_loudly(tiny_tokenizer, tmp_path):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    # puts the number of messages first: the prompt is never a prefix of prompt + answer
    tok.chat_template = "{{ messages|length }}" + factory.CHATML
    with pytest.raises(DataError, match="prefix-preserving") as err:
        render_pairs(
            PairRenderer(tok, 64, "weird.jinja"),
            load_pairs_rows(tmp_path, [{"prompt": Q, "chosen": A, "rejected": B}]),
        )
    assert err.value.field == "answer[0]" and err.value.line == 1


def load_pairs_rows(tmp_path, rows):
    return load_pairs([_write(tmp_path, rows, "rows.jsonl")])
