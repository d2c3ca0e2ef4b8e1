"""Format conversion: lossless round trips, per-line refusal of lossy rows, safe output."""

from __future__ import annotations

import json

import pytest

from tunesmith.data.formats import load_examples
from tunesmith.data.tools.convert import convert_file
from tunesmith.errors import DataError, TunesmithError

SYSTEM = {"role": "system", "content": "Be brief."}
USER = {"role": "user", "content": "What is 2+2?"}
ASSISTANT = {"role": "assistant", "content": "4"}
CHAT = {"messages": [SYSTEM, USER, ASSISTANT], "id": "r1"}
TARGETS = ["openai-chat", "sharegpt", "alpaca", "prompt-completion"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def same_examples(a, b):
    """Examples equal up to their source and the default weight 1."""

    def key(example):
        messages = [
            {k: v for k, v in m.items() if not (k == "weight" and v == 1)} for m in example.messages or []
        ]
        return example.kind, messages, example.tools or None, example.text, example.extra

    return [key(e) for e in a] == [key(e) for e in b]


@pytest.mark.parametrize("to", TARGETS)
def test_single_turn_chat_round_trips_through_every_format(tmp_path, to):
    source = write_jsonl(tmp_path / "in.jsonl", [CHAT, {"messages": [USER, ASSISTANT]}])
    report = convert_file(source, tmp_path / "out.jsonl", to)
    assert report == {
        "input": str(source),
        "output": str(tmp_path / "out.jsonl"),
        "from": "OpenAI chat",
        "to": to,
        "rows": 2,
        "written": 2,
        "skipped_lossy": 0,
        "skipped": [],
    }
    assert same_examples(load_examples(tmp_path / "out.jsonl"), load_examples(source))
    back = convert_file(tmp_path / "out.jsonl", tmp_path / "back.jsonl", "openai-chat")
    assert back["written"] == 2
    assert read_jsonl(tmp_path / "back.jsonl")[0] == CHAT


def test_target_shapes(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [CHAT])
    shapes = {}
    for to in TARGETS:
        convert_file(source, tmp_path / f"{to}.jsonl", to)
        shapes[to] = read_jsonl(tmp_path / f"{to}.jsonl")[0]
    assert shapes["alpaca"] == {
        "system": "Be brief.",
        "instruction": "What is 2+2?",
        "input": "",
        "output": "4",
        "id": "r1",
    }
    assert shapes["sharegpt"] == {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "What is 2+2?"},
            {"from": "gpt", "value": "4"},
        ],
        "id": "r1",
    }
    assert shapes["prompt-completion"] == {"prompt": [SYSTEM, USER], "completion": [ASSISTANT], "id": "r1"}
    assert shapes["openai-chat"] == CHAT


def test_alpaca_input_and_sharegpt_and_string_prompt_completion_sources(tmp_path):
    alpaca = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Sum", "input": "2, 2", "output": "4"}])
    convert_file(alpaca, tmp_path / "a_out.jsonl", "openai_chat")  # underscores accepted
    assert read_jsonl(tmp_path / "a_out.jsonl") == [
        {"messages": [{"role": "user", "content": "Sum\n\n2, 2"}, {"role": "assistant", "content": "4"}]}
    ]

    pc = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "Q: hi\nA:", "completion": " hello"}])
    assert convert_file(pc, tmp_path / "pc_out.jsonl", "alpaca")["from"] == "prompt/completion"
    assert read_jsonl(tmp_path / "pc_out.jsonl") == [
        {"instruction": "Q: hi\nA:", "input": "", "output": " hello"}
    ]
    convert_file(pc, tmp_path / "pc_same.jsonl", "prompt-completion")
    assert read_jsonl(tmp_path / "pc_same.jsonl") == read_jsonl(pc)

    sharegpt = write_jsonl(
        tmp_path / "s.jsonl",
        [
            {
                "conversations": [
                    {"from": "human", "value": "hi"},
                    {"from": "gpt", "value": "yo", "weight": 0},
                    {"from": "human", "value": "bye"},
                    {"from": "gpt", "value": "ciao"},
                ]
            }
        ],
    )
    convert_file(sharegpt, tmp_path / "s_out.jsonl", "openai-chat")
    assert read_jsonl(tmp_path / "s_out.jsonl")[0]["messages"][1] == {
        "role": "assistant",
        "content": "yo",
        "weight": 0,
    }


def test_multi_turn_to_prompt_completion_keeps_earlier_turns_trained(tmp_path):
    messages = [
        USER,
        ASSISTANT,
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "6"},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", [{"messages": messages}])
    convert_file(source, tmp_path / "out.jsonl", "prompt-completion")
    row = read_jsonl(tmp_path / "out.jsonl")[0]
    assert row["prompt"][1] == {**ASSISTANT, "weight": 1}
    assert row["completion"] == [messages[-1]]
    assert same_examples(load_examples(tmp_path / "out.jsonl"), load_examples(source))


def test_lossy_row_is_refused_naming_the_line(tmp_path):
    multi = {"messages": [USER, ASSISTANT, USER, ASSISTANT]}
    source = write_jsonl(tmp_path / "in.jsonl", [CHAT, multi])
    out = tmp_path / "out.jsonl"
    with pytest.raises(DataError) as caught:
        convert_file(source, out, "alpaca")
    message = str(caught.value)
    assert caught.value.line == 2 and "line 2" in message
    assert "4 non-system messages" in message and "--skip-lossy" in message
    assert not out.exists()  # nothing half-written


def test_skip_lossy_skips_and_counts(tmp_path):
    tool_call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    rows = [
        CHAT,
        {"messages": [USER, ASSISTANT, USER, ASSISTANT]},
        {"messages": [USER, tool_call, {"role": "tool", "content": "1", "tool_call_id": "c1"}, ASSISTANT]},
        {"messages": [USER, {**ASSISTANT, "weight": 0}, USER, ASSISTANT]},
        {"messages": [USER, ASSISTANT], "tools": [{"type": "function"}]},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    report = convert_file(source, tmp_path / "out.jsonl", "alpaca", skip_lossy=True)
    assert (report["rows"], report["written"], report["skipped_lossy"]) == (5, 1, 4)
    assert [s["line"] for s in report["skipped"]] == [2, 3, 4, 5]
    assert "tool definitions" in report["skipped"][3]["reason"]
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 1

    report = convert_file(source, tmp_path / "sg.jsonl", "sharegpt", skip_lossy=True)
    assert [s["line"] for s in report["skipped"]] == [3, 5]
    assert "tool_calls" in report["skipped"][0]["reason"]

    report = convert_file(source, tmp_path / "oa.jsonl", "openai-chat")
    assert report["written"] == 5
    assert same_examples(load_examples(tmp_path / "oa.jsonl"), load_examples(source))


@pytest.mark.parametrize(
    "row, to, reason",
    [
        ({"messages": [USER, ASSISTANT, USER]}, "prompt-completion", "does not end"),
        (
            {"messages": [USER, ASSISTANT, USER, {**ASSISTANT, "weight": 0}, USER, ASSISTANT]},
            "alpaca",
            "non-system messages",
        ),
        ({"messages": [USER, ASSISTANT], "system": "x"}, "alpaca", "extra field 'system'"),
        ({"messages": [USER, ASSISTANT], "system": "x"}, "sharegpt", "extra field 'system'"),
        ({"messages": [{"role": "system", "content": ""}, USER, ASSISTANT]}, "alpaca", "read back"),
        ({"text": "plain document"}, "openai-chat", "raw text"),
        ({"messages": [USER, ASSISTANT], "label": True, "x": 1}, "prompt-completion", "read as KTO"),
    ],
)
def test_lossy_reasons(tmp_path, row, to, reason):
    source = write_jsonl(tmp_path / "in.jsonl", [row])
    with pytest.raises(DataError, match=reason):
        convert_file(source, tmp_path / "out.jsonl", to)


def test_user_mistakes_raise_tunesmith_errors(tmp_path, monkeypatch):
    source = write_jsonl(tmp_path / "in.jsonl", [CHAT])
    before = source.read_bytes()
    with pytest.raises(
        TunesmithError,
        match="unknown target format 'csv'; choose one of openai-chat, sharegpt, alpaca, prompt-completion",
    ):
        convert_file(source, tmp_path / "out.jsonl", "csv")
    monkeypatch.chdir(tmp_path)
    for out in [source, "in.jsonl", "./sub/../in.jsonl"]:
        with pytest.raises(TunesmithError, match="input file"):
            convert_file(source, out, "alpaca")
    assert source.read_bytes() == before
    with pytest.raises(DataError, match="file not found"):
        convert_file(tmp_path / "missing.jsonl", tmp_path / "out.jsonl", "alpaca")
    preference = write_jsonl(tmp_path / "dpo.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    with pytest.raises(DataError, match="SFT formats only"):
        convert_file(preference, tmp_path / "out.jsonl", "alpaca")
    assert not (tmp_path / "out.jsonl").exists()


def test_extra_fields_that_keep_the_format_are_carried(tmp_path):
    row = {"messages": [USER, ASSISTANT], "prompt": "kept", "meta": {"a": [1]}}
    source = write_jsonl(tmp_path / "in.jsonl", [row])
    convert_file(source, tmp_path / "out.jsonl", "openai-chat")
    assert read_jsonl(tmp_path / "out.jsonl") == [row]


def test_invalid_input_row_is_reported_by_line(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [CHAT, {"messages": [USER]}])
    with pytest.raises(DataError, match="line 2"):
        convert_file(source, tmp_path / "out.jsonl", "sharegpt")
