"""Regenerate the bad-data corpus: one small file per defect, and EXPECTED.json.

Each file holds 11 lines (so the 10-example minimum is met) that are valid except the one
defective line; EXPECTED.json maps file name -> {code, line, message_index, method}.
Run: python tests/assets/bad_data/_generate.py
"""

import json
from pathlib import Path

HERE = Path(__file__).parent
BAD_LINE = 5


def chat(i):
    return {
        "messages": [
            {"role": "user", "content": f"question number {i}"},
            {"role": "assistant", "content": f"answer number {i}"},
        ]
    }


def pref(i):
    return {
        "input": {"messages": [{"role": "user", "content": f"question number {i}"}]},
        "preferred_output": [{"role": "assistant", "content": f"good answer {i}"}],
        "non_preferred_output": [{"role": "assistant", "content": f"bad answer {i}"}],
    }


def u(text):
    return {"role": "user", "content": text}


def a(text, **kw):
    return {"role": "assistant", "content": text, **kw}


CALL = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}


def call_with(arguments):
    return {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": arguments}}


# name -> (bad line as a JSON value or raw bytes, code, message_index, valid-row builder, method)
CASES = {
    "invalid_json": (b'{"messages": [{"role": "user", "content": "hi"}', "invalid_json", None),
    "invalid_utf8": (
        b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "ok"}]}',
        "invalid_utf8",
        None,
    ),
    "top_level_array": ([chat(0)], "data_type", None),
    "top_level_string": ("hello", "data_type", None),
    "missing_messages": ({"dialogue": [u("hi"), a("ho")]}, "missing_messages_list", None),
    "empty_messages": ({"messages": []}, "missing_messages_list", None),
    "messages_not_list": ({"messages": "hi there"}, "missing_messages_list", None),
    "message_not_object": ({"messages": ["hi", a("ho")]}, "data_type", 1),
    "missing_role": ({"messages": [u("hi"), {"content": "ho"}]}, "message_missing_key", 2),
    "missing_content_key": ({"messages": [{"role": "user"}, a("ho")]}, "message_missing_key", 1),
    "unknown_message_key": ({"messages": [u("hi"), a("ho", mood="happy")]}, "message_unrecognized_key", 2),
    "role_bot": ({"messages": [u("hi"), {"role": "bot", "content": "ho"}, a("x")]}, "unrecognized_role", 2),
    "role_function": (
        {"messages": [u("hi"), {"role": "function", "name": "f", "content": "1"}, a("x")]},
        "unrecognized_role",
        2,
    ),
    "null_content": ({"messages": [u("hi"), {"role": "assistant", "content": None}]}, "missing_content", 2),
    "content_number": ({"messages": [u("hi"), a(42)]}, "invalid_content", 2),
    "content_parts": (
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}, a("ho")]},
        "invalid_content",
        1,
    ),
    "no_assistant": ({"messages": [u("hi"), u("anyone?")]}, "example_missing_assistant_message", None),
    "all_weights_zero": ({"messages": [u("hi"), a("ho", weight=0)]}, "no_trained_messages", None),
    "weight_half": ({"messages": [u("hi"), a("ho", weight=0.5)]}, "invalid_weight", 2),
    "weight_true": ({"messages": [u("hi"), a("ho", weight=True)]}, "invalid_weight", 2),
    "weight_on_user": (
        {"messages": [{"role": "user", "content": "hi", "weight": 1}, a("ho")]},
        "weight_on_non_assistant",
        1,
    ),
    "tool_calls_on_user": (
        {"messages": [{"role": "user", "content": "hi", "tool_calls": [CALL]}, a("ho")]},
        "assistant_only_key",
        1,
    ),
    "tool_missing_call_id": (
        {
            "messages": [
                u("weather?"),
                a(None, tool_calls=[CALL]),
                {"role": "tool", "content": "sunny"},
                a("sunny"),
            ]
        },
        "tool_message_missing_tool_call_id",
        3,
    ),
    "tool_calls_not_list": (
        {"messages": [u("hi"), a(None, tool_calls={"id": "c1"})]},
        "invalid_tool_calls",
        2,
    ),
    "tool_call_without_function": (
        {"messages": [u("hi"), a(None, tool_calls=[{"id": "c1"}])]},
        "invalid_tool_calls",
        2,
    ),
    "arguments_object": (
        {"messages": [u("hi"), a(None, tool_calls=[call_with({"city": "Oslo"})])]},
        "tool_call_arguments_not_string",
        2,
    ),
    "arguments_bad_json": (
        {"messages": [u("hi"), a(None, tool_calls=[call_with("{city: Oslo")])]},
        "tool_call_arguments_invalid_json",
        2,
    ),
    "tools_not_list": ({"messages": [u("hi"), a("ho")], "tools": "weather"}, "invalid_tools", None),
    "special_token_im_end": ({"messages": [u("hi"), a("ho<|im_end|> more")]}, "special_token_in_text", 2),
    "special_token_endoftext": ({"messages": [u("<|endoftext|>hi"), a("ho")]}, "special_token_in_text", 1),
    "lone_surrogate": (
        b'{"messages": [{"role": "user", "content": "hi \\ud800"}, {"role": "assistant", "content": "ho"}]}',
        "invalid_unicode",
        1,
    ),
    "format_mismatch": (
        {"prompt": "p", "completion": "c", "label": True},
        "format_mismatch",
        None,
        lambda i: {"prompt": f"prompt {i}", "completion": f"completion {i}"},
    ),
    "alpaca_output_number": (
        {"instruction": "say hi", "output": 7},
        "invalid_example",
        None,
        lambda i: {"instruction": f"task {i}", "output": f"done {i}"},
    ),
    "kto_label_string": (
        {"prompt": "p", "completion": "c", "label": "yes"},
        "invalid_example",
        None,
        lambda i: {"prompt": f"p {i}", "completion": f"c {i}", "label": True},
        "kto",
    ),
    "dpo_missing_input": (
        {k: v for k, v in pref(99).items() if k != "input"},
        "missing_key",
        None,
        pref,
        "dpo",
    ),
    "dpo_missing_non_preferred": (
        {k: v for k, v in pref(99).items() if k != "non_preferred_output"},
        "missing_key",
        None,
        pref,
        "dpo",
    ),
    "dpo_two_preferred": (
        dict(pref(99), preferred_output=[a("one"), a("two")]),
        "invalid_preference_output",
        None,
        pref,
        "dpo",
    ),
    "dpo_output_user_role": (
        dict(pref(99), non_preferred_output=[u("no")]),
        "invalid_preference_output",
        None,
        pref,
        "dpo",
    ),
    "dpo_output_not_list": (
        dict(pref(99), preferred_output=a("one")),
        "invalid_preference_output",
        None,
        pref,
        "dpo",
    ),
    "dpo_input_without_messages": (
        dict(pref(99), input={"prompt": "hi"}),
        "missing_messages_list",
        None,
        pref,
        "dpo",
    ),
    "dpo_input_missing_role": (
        dict(pref(99), input={"messages": [{"content": "hi"}]}),
        "message_missing_key",
        1,
        pref,
        "dpo",
    ),
}


def main():
    expected = {}
    for name, case in CASES.items():
        bad, code, index = case[:3]
        valid = case[3] if len(case) > 3 else chat
        method = case[4] if len(case) > 4 else "sft"
        lines = [json.dumps(valid(i)).encode() for i in range(1, 12)]
        lines[BAD_LINE - 1] = bad if isinstance(bad, bytes) else json.dumps(bad).encode()
        (HERE / f"{name}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        expected[f"{name}.jsonl"] = {"code": code, "line": BAD_LINE, "message_index": index, "method": method}
    (HERE / "wrong_method_chat_as_dpo.jsonl").write_text(
        "".join(json.dumps(chat(i)) + "\n" for i in range(1, 12))
    )
    expected["wrong_method_chat_as_dpo.jsonl"] = {
        "code": "format_method_mismatch",
        "line": 1,
        "message_index": None,
        "method": "dpo",
    }
    (HERE / "too_few_examples.jsonl").write_text("".join(json.dumps(chat(i)) + "\n" for i in range(1, 10)))
    expected["too_few_examples.jsonl"] = {
        "code": "invalid_n_examples",
        "line": None,
        "message_index": None,
        "method": "sft",
    }
    (HERE / "EXPECTED.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
