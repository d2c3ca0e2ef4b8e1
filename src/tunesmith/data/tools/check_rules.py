"""The per-row rules of ``tunesmith data check`` (roles, content types, tool calls, special
tokens …), shared with the jobs service's reinforcement-data check (``jobs/rft_data.py``)."""

from __future__ import annotations

import json
import re
from typing import Any

from ... import jsontext
from .. import formats as F
from .check_report import WARNING_CODES, CheckReport, describe_value, where

_ROLES = frozenset(F.ROLES) | {"developer"}
_ASSISTANT_ONLY = ("tool_calls", "function_call", "thinking", "reasoning_content")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

# ---- per-row rules ------------------------------------------------------------------------


class RowRules:
    """The checks of one row; problems go to ``report`` under ``param``."""

    def __init__(self, report: CheckReport, param: str, special: re.Pattern[str] | None):
        self.report, self.param, self.special = report, param, special
        self.row_errors = 0

    def add(self, code: str, line: int, message: str, index: int | None = None) -> None:
        if code not in WARNING_CODES:
            self.row_errors += 1
        self.report.add(code, line, message, index, self.param)

    def texts(self, value: Any, line: int, index: int | None = None) -> None:
        """Special tokens and lone surrogates in every string inside ``value``."""
        strings: list[str] = []
        _strings(value, strings)
        for text in strings:
            if _LONE_SURROGATE.search(text):
                self.add(
                    "invalid_unicode",
                    line,
                    f"{where(line, index)} contains a lone "
                    "surrogate (an unpaired \\ud800-\\udfff escape), which is not text",
                    index,
                )
            found = self.special.search(text) if self.special else None
            if found:
                self.add(
                    "special_token_in_text",
                    line,
                    f"{where(line, index)} contains an invalid token: {found.group(0)}",
                    index,
                )

    # -- chat ---------------------------------------------------------------------------------
    def messages(
        self,
        value: Any,
        line: int,
        *,
        field: str = "messages",
        need_assistant: bool = True,
        indexed: bool = True,
    ) -> None:
        """Check a message list (OpenAI chat rules); ``indexed`` numbers messages in errors."""
        if not isinstance(value, list) or not value:
            got = "an empty array" if value == [] else describe_value(value)
            self.add(
                "missing_messages_list",
                line,
                f"{where(line)} needs a non-empty '{field}' array of messages, got {got}",
            )
            return
        for j, message in enumerate(value, start=1):
            self.message(message, line, j if indexed else None, f"{field}[{j - 1}]")
        dicts = [m for m in value if isinstance(m, dict)]
        assistants = [m for m in dicts if m.get("role") == "assistant"]
        # A message without a role might be the assistant one: no second error for it.
        unknown_role = len(dicts) < len(value) or any(m.get("role") is None for m in dicts)
        if need_assistant and not assistants and not unknown_role:
            self.add(
                "example_missing_assistant_message",
                line,
                f"{where(line)} has no assistant message to train on",
            )
        elif need_assistant and assistants and all(m.get("weight", 1) == 0 for m in assistants):
            self.add(
                "no_trained_messages",
                line,
                f"{where(line)} has weight 0 on every assistant message, so there is nothing to train on",
            )

    def message(self, message: Any, line: int, j: int | None, field: str) -> None:
        at = where(line, j) if j else f"{where(line)}, {field}"
        if not isinstance(message, dict):
            self.add("data_type", line, f"{at} is not an object (got {describe_value(message)})", j)
            return
        for key in sorted(set(message) - F._MESSAGE_KEYS, key=str):
            self.add(
                "message_unrecognized_key",
                line,
                f"{at} has unrecognized key '{key}'; allowed: " + ", ".join(sorted(F._MESSAGE_KEYS)),
                j,
            )
        role = message.get("role")
        if role is None:
            self.add("message_missing_key", line, f"{at} is missing key 'role'", j)
        elif role not in _ROLES:
            shown = repr(role) if isinstance(role, str) else describe_value(role)
            self.add(
                "unrecognized_role",
                line,
                f"{at} has unrecognized role {shown}; expected "
                "system, user, assistant or tool (or developer)",
                j,
            )
        self.content(message, role, line, j, at)
        self.assistant_keys(message, role, line, j, at)
        if role == "tool" and not message.get("tool_call_id"):
            self.add(
                "tool_message_missing_tool_call_id", line, f"{at} has role 'tool' but no 'tool_call_id'", j
            )
        self.texts(message.get("content"), line, j)

    def content(self, message: dict, role: Any, line: int, j: int | None, at: str) -> None:
        content = message.get("content")
        calls = message.get("tool_calls") is not None or message.get("function_call") is not None
        if content is None and calls and role == "assistant":
            return
        if "content" not in message:
            self.add("message_missing_key", line, f"{at} is missing key 'content'", j)
        elif content is None:
            self.add("missing_content", line, f"{at} has null content and no tool_calls", j)
        elif not isinstance(content, str):
            self.add(
                "invalid_content",
                line,
                f"{at} has content of type {describe_value(content)}; content must be a string",
                j,
            )
        elif not content.strip():
            self.add("empty_content", line, f"{at} has empty content", j)

    def assistant_keys(self, message: dict, role: Any, line: int, j: int | None, at: str) -> None:
        weight = message.get("weight")
        if weight is not None and role != "assistant":
            self.add(
                "weight_on_non_assistant",
                line,
                f'{at} contains an extra "weight"; weight '
                f"is only allowed on assistant messages (role is {role!r})",
                j,
            )
        elif weight is not None and (isinstance(weight, bool) or weight not in (0, 1)):
            self.add(
                "invalid_weight",
                line,
                f"{at} has weight {json.dumps(weight)}; the allowed values are 0 and 1",
                j,
            )
        for key in _ASSISTANT_ONLY:
            if message.get(key) is not None and role != "assistant" and role is not None:
                self.add(
                    "assistant_only_key",
                    line,
                    f"{at} has '{key}', which is only allowed on assistant messages (role is {role!r})",
                    j,
                )
        if role == "assistant" and message.get("tool_calls") is not None:
            self.tool_calls(message["tool_calls"], line, j, at)

    def tool_calls(self, calls: Any, line: int, j: int | None, at: str) -> None:
        if not isinstance(calls, list):
            self.add(
                "invalid_tool_calls",
                line,
                f"{at} has tool_calls of type {describe_value(calls)}; expected an array",
                j,
            )
            return
        for k, call in enumerate(calls):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                self.add(
                    "invalid_tool_calls",
                    line,
                    f"{at}, tool_calls[{k}] needs 'function': {{'name': ..., 'arguments': ...}}",
                    j,
                )
                continue
            arguments = function.get("arguments")
            if not isinstance(arguments, str):
                self.add(
                    "tool_call_arguments_not_string",
                    line,
                    f"{at}, tool_calls[{k}]."
                    f"function.arguments is {describe_value(arguments)}; it must be a JSON string "
                    '(e.g. "{\\"city\\": \\"Paris\\"}")',
                    j,
                )
                continue
            try:
                jsontext.loads(arguments)
            except json.JSONDecodeError as err:
                self.add(
                    "tool_call_arguments_invalid_json",
                    line,
                    f"{at}, tool_calls[{k}].function.arguments is not valid JSON: {err.msg}",
                    j,
                )

    def chat_row(self, row: dict, line: int) -> None:
        self.messages(row.get("messages"), line)
        tools = row.get("tools")
        if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
            self.add(
                "invalid_tools",
                line,
                f"{where(line)} has 'tools' of type {describe_value(tools)}; expected an array of tool definitions",
            )

    # -- OpenAI preference ----------------------------------------------------------------------
    def preference_row(self, row: dict, line: int) -> None:
        source = row.get("input")
        if not isinstance(source, dict):
            self.add(
                "missing_messages_list",
                line,
                f"{where(line)} needs 'input' to be an object with a 'messages' array, got {describe_value(source)}",
            )
        else:
            self.messages(source.get("messages"), line, field="input.messages", need_assistant=False)
        for key in ("preferred_output", "non_preferred_output"):
            self.preference_output(row.get(key), key, line)

    def preference_output(self, value: Any, key: str, line: int) -> None:
        if not isinstance(value, list) or len(value) != 1:
            got = f"{len(value)} messages" if isinstance(value, list) else describe_value(value)
            self.add(
                "invalid_preference_output",
                line,
                f"{where(line)}: '{key}' must be an array of exactly one assistant message, got {got}",
            )
            return
        message = value[0]
        if isinstance(message, dict) and message.get("role") != "assistant":
            self.add(
                "invalid_preference_output",
                line,
                f"{where(line)}: '{key}' must be an assistant message, got role {message.get('role')!r}",
            )
            return
        self.message(message, line, None, f"{key}[0]")

    # -- other formats --------------------------------------------------------------------------
    def simple_row(self, row: dict, fmt: str, line: int) -> None:
        """Formats without OpenAI-specific rules: types only (prompt/chosen/... or KTO label)."""
        keys = {
            F.PREFERENCE_PAIRS: ("prompt", "chosen", "rejected"),
            F.KTO: ("prompt", "completion"),
            F.PROMPT_ONLY: ("prompt",),
        }[fmt]
        for key in keys:
            value = row.get(key)
            if isinstance(value, list):
                self.messages(value, line, field=key, need_assistant=False, indexed=False)
            elif not isinstance(value, str):
                self.add(
                    "invalid_example",
                    line,
                    f"{where(line)}: '{key}' must be a string or an array of messages, got {describe_value(value)}",
                )
        if fmt == F.KTO and not isinstance(row.get("label"), bool):
            self.add(
                "invalid_example",
                line,
                f"{where(line)}: 'label' must be true or false, got {describe_value(row.get('label'))}",
            )
        self.texts({k: row.get(k) for k in keys}, line)


def _strings(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _strings(item, out)
    elif isinstance(value, list):
        for item in value:
            _strings(item, out)


def special_token_pattern(tokenizer: Any) -> re.Pattern[str] | None:
    """A regex matching any special token of ``tokenizer`` literally (longest first)."""
    tokens = set(getattr(tokenizer, "all_special_tokens", []) or [])
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    tokens |= {tok.content for tok in decoder.values() if getattr(tok, "special", False)}
    tokens = sorted((t for t in tokens if t and t.strip()), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, tokens))) if tokens else None
