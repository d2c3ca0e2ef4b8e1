"""Format detection and normalisation into Example records, with exact error locations."""

from __future__ import annotations

import csv
import json

import pytest

from tunesmith.data.example import Example
from tunesmith.data.formats import detect_format, load_examples
from tunesmith.errors import DataError

USER = {"role": "user", "content": "What is 2+2?"}
ASSISTANT = {"role": "assistant", "content": "4"}
CHAT = {"messages": [USER, ASSISTANT]}


def write_jsonl(tmp_path, rows, name="train.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def load_error(path, expect="sft") -> DataError:
    with pytest.raises(DataError) as caught:
        load_examples(path, expect=expect)
    return caught.value


def chat_error(tmp_path, messages, **row) -> DataError:
    """The error for a file whose line 2 has ``messages`` (line 1 is a valid chat row)."""
    return load_error(write_jsonl(tmp_path, [CHAT, {"messages": messages, **row}]))


# ---- detect_format ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "row, expected",
    [
        (CHAT, "openai_chat"),
        ({"conversations": [{"from": "human", "value": "hi"}]}, "sharegpt"),
        ({"instruction": "i", "input": "", "output": "o"}, "alpaca"),
        ({"instruction": "i", "output": "o", "text": "rendered"}, "alpaca"),
        ({"prompt": "p", "completion": "c"}, "prompt_completion"),
        ({"text": "t"}, "text"),
        (
            {
                "input": {"messages": [USER]},
                "preferred_output": [ASSISTANT],
                "non_preferred_output": [ASSISTANT],
            },
            "openai_preference",
        ),
        ({"prompt": "p", "chosen": "a", "rejected": "b"}, "preference_pairs"),
        ({"prompt": "p", "completion": "c", "label": False}, "kto"),
        ({"prompt": "p", "answer": 4}, "prompt_only"),
        ({"prompt": "p", "text": "t"}, "prompt_only"),
        ({"messages": None, "text": "t"}, "text"),  # null counts as absent
        ({"foo": 1}, None),
        ([1, 2], None),
    ],
)
def test_detect_format(row, expected):
    assert detect_format(row) == expected


# ---- normalisation of each SFT-style format ------------------------------------------------


def test_openai_chat_normalises_and_keeps_extras(tmp_path):
    tools = [{"type": "function", "function": {"name": "add", "parameters": {}}}]
    row = {
        "messages": [
            {"role": "developer", "content": "Be terse."},
            USER,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add"}}],
            },
            {"role": "tool", "content": "4", "tool_call_id": "c1"},
            {"role": "assistant", "content": "4", "weight": 1, "name": None},
        ],
        "tools": tools,
        "id": "ex-1",
        "metadata": {"split": "a"},
    }
    [example] = load_examples(write_jsonl(tmp_path, [row]))
    assert example.kind == "chat" and example.tools == tools
    assert example.messages[0] == {"role": "system", "content": "Be terse."}
    assert example.messages[2]["content"] is None
    assert example.messages[4] == {"role": "assistant", "content": "4", "weight": 1}
    assert example.extra == {"id": "ex-1", "metadata": {"split": "a"}}
    assert example.source == f"{tmp_path / 'train.jsonl'}:1"


def test_source_uses_physical_line_numbers(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(CHAT) + "\n\n" + json.dumps(CHAT) + "\n")
    assert [e.source for e in load_examples(path)] == [f"{path}:1", f"{path}:3"]


def test_sharegpt_maps_speakers_and_system(tmp_path):
    row = {
        "system": "Be kind.",
        "conversations": [
            {"from": "human", "value": "hi"},
            {"from": "gpt", "value": "hello", "weight": 0},
            {"from": "user", "value": "more"},
            {"from": "assistant", "value": "ok"},
        ],
        "id": 7,
    }
    [example] = load_examples(write_jsonl(tmp_path, [row]))
    assert example.messages == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello", "weight": 0},
        {"role": "user", "content": "more"},
        {"role": "assistant", "content": "ok"},
    ]
    assert example.extra == {"id": 7}


def test_conversations_with_role_content_are_read_as_openai_messages(tmp_path):
    [example] = load_examples(write_jsonl(tmp_path, [{"conversations": [USER, ASSISTANT]}]))
    assert example.messages == [USER, ASSISTANT]


def test_alpaca_with_and_without_input(tmp_path):
    rows = [
        {"instruction": "Add.", "input": "2 and 2", "output": "4", "system": "Math."},
        {"instruction": "Say hi.", "input": "", "output": "hi", "text": "rendered"},
    ]
    first, second = load_examples(write_jsonl(tmp_path, rows))
    assert first.messages == [
        {"role": "system", "content": "Math."},
        {"role": "user", "content": "Add.\n\n2 and 2"},
        {"role": "assistant", "content": "4"},
    ]
    assert second.messages == [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}]
    assert second.extra == {"text": "rendered"}


def test_prompt_completion_strings(tmp_path):
    [example] = load_examples(
        write_jsonl(tmp_path, [{"prompt": "2+2=", "completion": "4", "reference": "4"}])
    )
    assert example == Example(
        kind="completion", source=example.source, prompt="2+2=", completion="4", extra={"reference": "4"}
    )


def test_prompt_completion_messages_train_only_the_completion(tmp_path):
    row = {"prompt": [USER, {"role": "assistant", "content": "earlier"}, USER], "completion": [ASSISTANT]}
    [example] = load_examples(write_jsonl(tmp_path, [row]))
    assert example.kind == "chat"
    assert example.messages == [
        USER,
        {"role": "assistant", "content": "earlier", "weight": 0},
        USER,
        ASSISTANT,
    ]


def test_text_rows_and_txt_files(tmp_path):
    [example] = load_examples(write_jsonl(tmp_path, [{"text": "corpus", "url": "u"}]), expect="pretrain")
    assert (example.kind, example.text, example.extra) == ("text", "corpus", {"url": "u"})
    txt = tmp_path / "book.txt"
    txt.write_text("Chapter 1\n")
    [example] = load_examples(txt, expect="pretrain")
    assert (example.kind, example.text, example.source) == ("text", "Chapter 1\n", f"{txt}:1")


def test_csv_with_json_messages_column(tmp_path):
    path = tmp_path / "train.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "messages"])
        writer.writerow(["a", json.dumps([USER, ASSISTANT])])
        writer.writerow(["b", json.dumps([USER, {"role": "bot", "content": "x"}])])
    err = load_error(path)
    assert (err.line, err.field) == (2, "messages[1].role")


def test_csv_alpaca(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("instruction,input,output\nSay hi.,,hi\n")
    [example] = load_examples(path)
    assert example.messages[0] == {"role": "user", "content": "Say hi."}
    assert example.source == f"{path}:1"


def test_parquet_chat_with_null_filled_struct_fields(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    # Parquet structs have one schema per column, so a missing "weight" comes back as null.
    records = [
        {
            "messages": [
                USER,
                {"role": "assistant", "content": "4", "weight": 0},
                {"role": "user", "content": "again"},
                ASSISTANT,
            ],
            "id": 1,
        }
    ]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(records), path)
    [example] = load_examples(path)
    assert example.messages == [
        USER,
        {"role": "assistant", "content": "4", "weight": 0},
        {"role": "user", "content": "again"},
        ASSISTANT,
    ]
    assert example.extra == {"id": 1}


# ---- errors: exact line and field ----------------------------------------------------------


def test_missing_field_in_a_later_row(tmp_path):
    path = write_jsonl(tmp_path, [CHAT] * 6 + [{"id": 7}])
    err = load_error(path)
    assert str(err) == (
        f"{path}, line 7, field 'messages': expected OpenAI chat format like "
        "line 1, but 'messages' is missing"
    )


def test_mixed_formats_within_a_file(tmp_path):
    path = write_jsonl(
        tmp_path, [{"prompt": "a", "completion": "b"}, {"prompt": "a", "completion": "b", "label": True}]
    )
    err = load_error(path)
    assert (err.line, err.field) == (2, "label")
    assert "expected prompt/completion format like line 1" in str(err)
    assert "KTO" in str(err)


def test_null_identifying_field_is_reported_as_null(tmp_path):
    err = load_error(write_jsonl(tmp_path, [{"text": "a"}, {"text": None}]))
    assert (err.line, err.field) == (2, "text") and "'text' is null" in str(err)


def test_unrecognised_first_row_lists_accepted_shapes(tmp_path):
    err = load_error(write_jsonl(tmp_path, [{"question": "q", "answer": "a"}]))
    assert err.line == 1
    assert "unrecognised example shape (keys: answer, question)" in str(err)
    assert "messages (OpenAI chat)" in str(err) and "instruction + output" in str(err)


def test_row_that_is_not_an_object(tmp_path):
    err = load_error(write_jsonl(tmp_path, [CHAT, [USER, ASSISTANT]]))
    assert err.line == 2 and "expected a JSON object, got array" in str(err)


def test_wrong_role(tmp_path):
    err = chat_error(tmp_path, [USER, {"role": "bot", "content": "4"}])
    assert (err.line, err.field) == (2, "messages[1].role")
    assert "role must be one of system, user, assistant, tool (or developer), got 'bot'" in str(err)


@pytest.mark.parametrize("weight, shown", [(2, "2"), (True, "true"), ("1", "'1'")])
def test_weight_must_be_0_or_1(tmp_path, weight, shown):
    err = chat_error(tmp_path, [USER, {**ASSISTANT, "weight": weight}])
    assert (err.line, err.field) == (2, "messages[1].weight")
    assert str(err).endswith(f"weight must be 0 or 1, got {shown}")


def test_weight_on_user_message(tmp_path):
    err = chat_error(tmp_path, [{**USER, "weight": 1}, ASSISTANT])
    assert (err.line, err.field) == (2, "messages[0].weight")
    assert "only allowed on assistant messages; this message has role 'user'" in str(err)


def test_unknown_message_key(tmp_path):
    err = chat_error(tmp_path, [USER, {**ASSISTANT, "loss": 1}])
    assert (err.line, err.field) == (2, "messages[1].loss")


@pytest.mark.parametrize(
    "messages, field, text",
    [
        ([], "messages", "non-empty array of messages, got an empty array"),
        ("hi", "messages", "non-empty array of messages, got string"),
        ([USER, "x"], "messages[1]", "each message must be an object, got string"),
        ([{"content": "x"}, ASSISTANT], "messages[0].role", "'role' is missing"),
        ([{"role": "user"}, ASSISTANT], "messages[0].content", "content must be a string, got missing"),
        ([USER, {"role": "assistant", "content": None}], "messages[1].content", "got null"),
        ([USER, {"role": "assistant", "content": 4}], "messages[1].content", "got number"),
        ([USER], "messages", "needs at least one assistant message"),
        ([USER, {**ASSISTANT, "weight": 0}], "messages", "every assistant message has weight 0"),
    ],
)
def test_bad_messages(tmp_path, messages, field, text):
    err = chat_error(tmp_path, messages)
    assert (err.line, err.field) == (2, field)
    assert text in str(err)


def test_tools_must_be_a_list(tmp_path):
    err = chat_error(tmp_path, [USER, ASSISTANT], tools={"name": "f"})
    assert (err.line, err.field) == (2, "tools")


def test_sharegpt_errors(tmp_path):
    good = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    cases = [
        (
            [{"from": "human", "value": "hi"}, {"from": "bot", "value": "yo"}],
            "conversations[1].from",
            "got 'bot'",
        ),
        (
            [{"from": "human", "value": 3}, {"from": "gpt", "value": "yo"}],
            "conversations[0].value",
            "value must be a string, got number",
        ),
        (
            [{"from": "human", "value": "hi", "weight": 1}, {"from": "gpt", "value": "yo"}],
            "conversations[0].weight",
            "only allowed on assistant",
        ),
        ([{"from": "human", "value": "hi"}], "conversations", "at least one assistant"),
        ([{"from": "function_call", "value": "{}"}], "conversations[0].from", "not supported"),
    ]
    for turns, field, text in cases:
        err = load_error(write_jsonl(tmp_path, [good, {"conversations": turns}]))
        assert (err.line, err.field) == (2, field), turns
        assert text in str(err)


def test_alpaca_errors(tmp_path):
    good = {"instruction": "i", "output": "o"}
    err = load_error(write_jsonl(tmp_path, [good, {"instruction": "i", "output": 5}]))
    assert (err.line, err.field) == (2, "output") and "must be a string, got number" in str(err)
    err = load_error(write_jsonl(tmp_path, [good, {**good, "history": [["q", "a"]]}]))
    assert (err.line, err.field) == (2, "history")


def test_prompt_completion_errors(tmp_path):
    good = {"prompt": [USER], "completion": [ASSISTANT]}
    err = load_error(write_jsonl(tmp_path, [good, {"prompt": [USER], "completion": [USER]}]))
    assert (err.line, err.field) == (2, "completion[0].role")
    assert "completion messages must have role 'assistant', got 'user'" in str(err)
    err = load_error(write_jsonl(tmp_path, [good, {"prompt": "p", "completion": [ASSISTANT]}]))
    assert (err.line, err.field) == (2, "completion")
    assert "must both be strings or both arrays of messages, got string and array" in str(err)


def test_text_must_be_a_string(tmp_path):
    err = load_error(write_jsonl(tmp_path, [{"text": "a"}, {"text": ["a"]}]))
    assert (err.line, err.field) == (2, "text")


# ---- expect: which formats each use accepts ------------------------------------------------


@pytest.mark.parametrize(
    "row, method",
    [
        ({"prompt": "p", "chosen": "a", "rejected": "b"}, "dpo"),
        (
            {
                "input": {"messages": [USER]},
                "preferred_output": [ASSISTANT],
                "non_preferred_output": [ASSISTANT],
            },
            "dpo",
        ),
        ({"prompt": "p", "completion": "c", "label": True}, "kto"),
    ],
)
def test_preference_data_is_rejected_for_sft(tmp_path, row, method):
    err = load_error(write_jsonl(tmp_path, [row]))
    assert err.line == 1
    assert "looks like preference data" in str(err)
    assert str(err).endswith(f"train it with method {method}")


def test_prompt_only_data_is_rejected_for_sft(tmp_path):
    err = load_error(write_jsonl(tmp_path, [{"prompt": "p", "answer": "4"}]))
    assert "looks like prompt-only data" in str(err) and str(err).endswith("method grpo")


def test_chat_data_is_rejected_for_pretraining(tmp_path):
    err = load_error(write_jsonl(tmp_path, [CHAT]), expect="pretrain")
    assert err.line == 1
    assert 'continued pretraining needs {"text": ...} rows or a .txt file' in str(err)
    assert str(err).endswith("train it with method sft")


def test_text_is_accepted_for_sft(tmp_path):
    [example] = load_examples(write_jsonl(tmp_path, [{"text": "t"}]))
    assert example.kind == "text"


def test_unknown_expect_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError, match="expect must be one of"):
        load_examples(write_jsonl(tmp_path, [CHAT]), expect="dpo")


def test_reader_errors_pass_through(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("")
    assert "file is empty: expected at least one example" in str(load_error(path))
