"""Held-out files -> evaluation items; bad fields are errors naming file, line and field."""

from __future__ import annotations

import factory
import pytest

from tunesmith.errors import DataError
from tunesmith.eval.data import load_eval_data, pair_examples


def test_chat_rows_give_prompt_reference_and_scorer_fields(tmp_path):
    rows = [
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "q?"},
                {"role": "assistant", "content": "full answer"},
            ],
            "reference": "short",
            "keywords": ["ans"],
            "fact_id": "f1",
        },
        {"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]},
    ]
    data = load_eval_data(str(factory.write_jsonl(tmp_path / "h.jsonl", rows)))
    first, second = data.items
    assert first.prompt == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q?"}]
    assert first.target["reference"] == "short" and first.target["keywords"] == ["ans"]
    assert first.target["fact_id"] == "f1" and first.target["source"].endswith("h.jsonl:1")
    assert second.target["reference"] == "a2" and first.example is not None


def test_prompt_only_completion_and_limit(tmp_path):
    p = factory.write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"say {i}", "regex": r"\d"} for i in range(5)])
    data = load_eval_data(str(p), limit=2)
    assert len(data.items) == 2 and data.items[0].example is None
    assert data.items[0].prompt == [{"role": "user", "content": "say 0"}]
    c = factory.write_jsonl(tmp_path / "c.jsonl", [{"prompt": "2+2=", "completion": "4"}])
    item = load_eval_data(str(c)).items[0]
    assert item.prompt == "2+2=" and item.target["reference"] == "4"


def test_preference_rows(tmp_path):
    rows = [{"prompt": "color of sky?", "chosen": "blue", "rejected": "green"}]
    data = load_eval_data(str(factory.write_jsonl(tmp_path / "p.jsonl", rows)))
    (pair,) = data.pairs
    chosen, rejected = pair_examples(pair)
    assert chosen.messages[-1] == {"role": "assistant", "content": "blue"}
    assert rejected.messages[0] == {"role": "user", "content": "color of sky?"}
    openai = [
        {
            "input": {"messages": [{"role": "user", "content": "hi"}]},
            "preferred_output": [{"role": "assistant", "content": "hello"}],
            "non_preferred_output": [{"role": "assistant", "content": "go away"}],
        }
    ]
    data = load_eval_data(str(factory.write_jsonl(tmp_path / "o.jsonl", openai)))
    assert data.pairs[0].rejected[0]["content"] == "go away"


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"keywords": "27"}, "keywords"),
        ({"reference": 5}, "reference"),
        ({"regex": "("}, "regex"),
        ({"json_schema": "x"}, "json_schema"),
    ],
)
def test_bad_scorer_fields_name_line_and_field(tmp_path, extra, field):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = factory.write_jsonl(tmp_path / "bad.jsonl", [good, {**good, **extra}])
    with pytest.raises(DataError) as err:
        load_eval_data(str(path))
    assert err.value.line == 2 and err.value.field == field and "bad.jsonl" in str(err.value)


def test_kto_rows_are_refused_with_a_reason(tmp_path):
    path = factory.write_jsonl(tmp_path / "k.jsonl", [{"prompt": "p", "completion": "c", "label": True}])
    with pytest.raises(DataError, match="no pairs"):
        load_eval_data(str(path))


def test_rft_rows_are_prompts_and_graders_see_the_row(tmp_path):
    # OpenAI's reinforcement fine-tuning rows: messages without an assistant turn + extra keys.
    rft = {
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}],
        "answer": "4",
    }
    chat = {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        "topic": "greeting",
    }
    data = load_eval_data(str(factory.write_jsonl(tmp_path / "r.jsonl", [rft, chat])))
    first, second = data.items
    assert first.example is None and first.prompt == rft["messages"]  # generation only
    assert first.target["answer"] == "4" and "messages" not in first.target
    # the grader's item is the row as written; a chat row's reference answer is added
    assert first.grader_item() == rft
    assert second.grader_item() == {**chat, "reference": "hello"}
