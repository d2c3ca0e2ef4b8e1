"""Detect a data file's example format and normalise its rows into :class:`Example` records.

A file holds one format, decided by its first row; every later row must have the same shape
(mixing formats is almost always a concatenation mistake). Errors name the file, the row
number (see :mod:`tunesmith.data.readers`) and the field, in JSON-path style with 0-based list
indices: ``messages[2].role`` is the third message's role.

JSON ``null`` counts as absent for optional fields: Parquet fills missing struct fields with
null, so ``{"weight": null}`` on a message means "no weight".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from os import PathLike
from typing import Any

from tunesmith.config.registry import (
    ALPACA,
    KTO,
    METHODS,
    OPENAI_CHAT,
    OPENAI_PREFERENCE,
    PREFERENCE_PAIRS,
    PROMPT_COMPLETION,
    PROMPT_ONLY,
    SHAREGPT,
    TEXT,
    suggest_method,
)
from tunesmith.data.example import Example
from tunesmith.data.readers import iter_rows
from tunesmith.errors import DataError

FORMAT_LABELS = {
    OPENAI_CHAT: "OpenAI chat",
    SHAREGPT: "ShareGPT",
    ALPACA: "Alpaca instruction",
    PROMPT_COMPLETION: "prompt/completion",
    TEXT: "raw text",
    OPENAI_PREFERENCE: "OpenAI preference",
    PREFERENCE_PAIRS: "preference pairs",
    KTO: "KTO (unpaired preference)",
    PROMPT_ONLY: "prompt-only",
}

# (format, identifying keys), most specific first: a KTO row also has prompt + completion and
# a prompt/completion row also has prompt. prompt_only precedes text because prompt-only RL
# rows may carry arbitrary extra fields (one may be called "text"); pretraining rows rarely
# have a "prompt".
_SIGNATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (OPENAI_PREFERENCE, ("input", "preferred_output", "non_preferred_output")),
    (PREFERENCE_PAIRS, ("chosen", "rejected")),
    (KTO, ("prompt", "completion", "label")),
    (OPENAI_CHAT, ("messages",)),
    (SHAREGPT, ("conversations",)),
    (PROMPT_COMPLETION, ("prompt", "completion")),
    (ALPACA, ("instruction", "output")),
    (PROMPT_ONLY, ("prompt",)),
    (TEXT, ("text",)),
)
_KEYS = dict(_SIGNATURES)

ACCEPTED_SHAPES = (
    "messages (OpenAI chat); conversations (ShareGPT); instruction + output "
    "(Alpaca); prompt + completion; text; input + preferred_output + "
    "non_preferred_output (OpenAI preference); prompt + chosen + rejected; "
    "prompt + completion + label (KTO); prompt (prompt-only)"
)


def detect_format(row: Any) -> str | None:
    """Name the format of one row (a key of :data:`FORMAT_LABELS`), or None if none fits.

    Only the presence of identifying keys (with non-null values) is checked, not their types:
    a row with a malformed ``messages`` is still OpenAI chat, so the error can say what is
    wrong with it rather than that the shape is unknown.
    """
    if not isinstance(row, dict):
        return None
    present = {key for key, value in row.items() if value is not None}
    for name, keys in _SIGNATURES:
        if present.issuperset(keys):
            return name
    return None


def iter_format_rows(path: str | PathLike[str]) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """Yield ``(number, file_format, row)``; every row is a dict of the first row's format.

    Raises :class:`DataError` (naming the row) for a non-object row, a first row of no known
    shape, or a later row whose shape differs from the first's. Preference-style consumers
    build on this; :func:`load_examples` is the SFT/pretraining one.
    """
    file_format: str | None = None
    first = 0
    for number, row in iter_rows(path):
        if not isinstance(row, dict):
            raise DataError(f"expected a JSON object, got {_describe(row)}", path=str(path), line=number)
        found = detect_format(row)
        if file_format is None:
            if found is None:
                keys = ", ".join(sorted(map(str, row))) or "none"
                raise DataError(
                    f"unrecognised example shape (keys: {keys}); accepted shapes: " + ACCEPTED_SHAPES,
                    path=str(path),
                    line=number,
                )
            file_format, first = found, number
        elif found != file_format:
            raise _mismatch(row, found, file_format, first, Where(str(path), number))
        yield number, file_format, row


def load_examples(path: str | PathLike[str], *, expect: str = "sft") -> list[Example]:
    """Read and normalise every example in ``path``; see :func:`iter_examples`."""
    return list(iter_examples(path, expect=expect))


def iter_examples(path: str | PathLike[str], *, expect: str = "sft") -> Iterator[Example]:
    """Yield one normalised :class:`Example` per row of ``path``, in file order.

    ``expect`` names the method whose formats (:mod:`tunesmith.config.registry`) the file must
    hold: ``sft`` accepts OpenAI chat, ShareGPT, Alpaca, prompt/completion and text rows,
    ``pretrain`` text rows (and ``.txt`` files) only. Any other format raises
    :class:`DataError` on the first row, naming the method that trains such data. Raises
    ``ValueError`` for an ``expect`` that is not a method reading examples (a programming
    error, not a user one).
    """
    readers = [name for name, spec in METHODS.items() if set(spec.formats) <= set(_NORMALISERS)]
    if expect not in readers:
        raise ValueError(f"expect must be one of {readers}, got {expect!r}")
    for number, file_format, row in iter_format_rows(path):
        at = Where(str(path), number)
        if file_format not in METHODS[expect].formats:
            raise _wrong_method(file_format, expect, at)
        yield to_example(row, file_format, at.path, number)


def to_example(row: dict[str, Any], file_format: str, path: str, line: int) -> Example:
    """Normalise one row already known to be ``file_format`` (an SFT-style format)."""
    normalise = _NORMALISERS.get(file_format)
    if normalise is None:
        raise ValueError(f"format {file_format!r} does not normalise to an Example")
    return normalise(row, Where(str(path), line))


# ---- errors -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """Where a row came from (path and row number), to build errors and ``Example.source``."""

    path: str
    line: int

    def error(self, message: str, field: str | None = None) -> DataError:
        return DataError(message, path=self.path, line=self.line, field=field)

    @property
    def source(self) -> str:
        return f"{self.path}:{self.line}"


def _describe(value: Any) -> str:
    """JSON's name for a value's type, for messages like 'got array'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    names = {dict: "object", list: "array", str: "string", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


def _mismatch(row: dict[str, Any], found: str | None, expected: str, first: int, at: Where) -> DataError:
    label = FORMAT_LABELS[expected]
    lead = f"expected {label} format like line {first}, but"
    for key in _KEYS[expected]:
        if key not in row:
            return at.error(f"{lead} '{key}' is missing", key)
        if row[key] is None:
            return at.error(f"{lead} '{key}' is null", key)
    # All expected keys are present, so the row matched a more specific format first.
    extra = [key for key in _KEYS.get(found or "", ()) if key not in _KEYS[expected]]
    if not extra:  # unreachable with the current signature order; keep the error useful
        return at.error(f"{lead} it looks like {FORMAT_LABELS.get(found or '', 'no known')} data")
    return at.error(
        f"{lead} this row also has '{extra[0]}', which makes it {FORMAT_LABELS[found]} data", extra[0]
    )


def _wrong_method(file_format: str, expect: str, at: Where) -> DataError:
    label = FORMAT_LABELS[file_format]
    if file_format in (OPENAI_PREFERENCE, PREFERENCE_PAIRS, KTO):
        label = f"preference data ({label} format)"
    else:
        label = f"{label} data"
    return at.error(
        f"this file looks like {label}, judging by its first row; {METHODS[expect].needs}; "
        f"train it with method {suggest_method(file_format)}"
    )


def _string(row: dict[str, Any], key: str, at: Where, *, optional: bool = False) -> str | None:
    value = row.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise at.error(f"must be a string, got {_describe(value)}", key)
    return value


def _extra(row: dict[str, Any], consumed: set[str]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key not in consumed}


# ---- chat messages ------------------------------------------------------------------------

ROLES = ("system", "user", "assistant", "tool")
_ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role
_MESSAGE_KEYS = frozenset(
    {
        "role",
        "content",
        "weight",
        "name",
        "tool_calls",
        "tool_call_id",
        "function_call",
        "thinking",
        "reasoning_content",
    }
)
_ASSISTANT_ONLY = ("weight", "tool_calls", "function_call", "thinking", "reasoning_content")


def check_messages(value: Any, field: str, at: Where) -> list[dict[str, Any]]:
    """Validate an OpenAI message list; return normalised copies (aliases mapped, nulls dropped).

    ``field`` is the path of the list (``messages``), used to name errors. An assistant
    message may have ``content`` null/missing when it has ``tool_calls`` or ``function_call``.
    """
    if not isinstance(value, list) or not value:
        got = "an empty array" if value == [] else _describe(value)
        raise at.error(f"must be a non-empty array of messages, got {got}", field)
    return [_check_message(message, f"{field}[{i}]", at) for i, message in enumerate(value)]


def _check_message(message: Any, field: str, at: Where) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise at.error(f"each message must be an object, got {_describe(message)}", field)
    unknown = sorted(set(message) - _MESSAGE_KEYS)
    if unknown:
        raise at.error(
            f"unknown message key '{unknown[0]}'; allowed keys: " + ", ".join(sorted(_MESSAGE_KEYS)),
            f"{field}.{unknown[0]}",
        )
    role = _check_role(message.get("role"), f"{field}.role", at)
    out = {key: value for key, value in message.items() if value is not None}
    out["role"] = role
    for key in _ASSISTANT_ONLY:
        if key in out and role != "assistant":
            raise at.error(
                f"'{key}' is only allowed on assistant messages; this message has role '{role}'",
                f"{field}.{key}",
            )
    if "weight" in out:
        out["weight"] = _check_weight(out["weight"], f"{field}.weight", at)
    if "tool_calls" in out and (
        not isinstance(out["tool_calls"], list) or not all(isinstance(c, dict) for c in out["tool_calls"])
    ):
        raise at.error("must be an array of tool-call objects", f"{field}.tool_calls")
    content = message.get("content")
    if content is None and ("tool_calls" in out or "function_call" in out):
        out["content"] = None  # a pure tool-calling assistant turn
    elif not isinstance(content, str):
        got = "missing" if "content" not in message else f"{_describe(content)}, not a string"
        raise at.error(f"content must be a string, got {got}", f"{field}.content")
    return out


def _check_role(role: Any, field: str, at: Where) -> str:
    if role is None:
        raise at.error("'role' is missing", field)
    role = _ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
    if role not in ROLES:
        shown = repr(role) if isinstance(role, str) else _describe(role)
        raise at.error(f"role must be one of {', '.join(ROLES)} (or developer), got {shown}", field)
    return role


def _check_weight(weight: Any, field: str, at: Where) -> int:
    # bool is an int subclass; `true` is not a weight (OpenAI accepts only 0 and 1).
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight not in (0, 1):
        shown = "true" if weight is True else "false" if weight is False else repr(weight)
        raise at.error(f"weight must be 0 or 1, got {shown}", field)
    return int(weight)


def _require_trained_assistant(messages: list[dict[str, Any]], field: str, at: Where) -> None:
    assistants = [m for m in messages if m["role"] == "assistant"]
    if not assistants:
        raise at.error("needs at least one assistant message to train on", field)
    if all(m.get("weight", 1) == 0 for m in assistants):
        raise at.error("every assistant message has weight 0, so there is nothing to train on", field)


def _check_tools(row: dict[str, Any], at: Where) -> list[dict[str, Any]] | None:
    tools = row.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        raise at.error(f"must be an array of tool definitions, got {_describe(tools)}", "tools")
    return tools


# ---- normalisers, one per SFT-style format -----------------------------------------------


def _from_openai_chat(row: dict[str, Any], at: Where) -> Example:
    messages = check_messages(row["messages"], "messages", at)
    _require_trained_assistant(messages, "messages", at)
    return Example(
        kind="chat",
        source=at.source,
        messages=messages,
        tools=_check_tools(row, at),
        extra=_extra(row, {"messages", "tools"}),
    )


_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "tool": "tool",
    "observation": "tool",
}


def _from_sharegpt(row: dict[str, Any], at: Where) -> Example:
    """``conversations`` of ``{from, value}`` turns (+ optional top-level ``system``) -> chat.

    A ``conversations`` list whose first turn has ``role`` is read as OpenAI messages, as
    some datasets do. ``tools`` is not consumed (ShareGPT variants disagree on its shape).
    """
    turns = row["conversations"]
    if isinstance(turns, list) and turns and isinstance(turns[0], dict) and "role" in turns[0]:
        messages = check_messages(turns, "conversations", at)
    else:
        messages = [_sharegpt_turn(turn, i, at) for i, turn in enumerate(_turn_list(turns, at))]
    system = _string(row, "system", at, optional=True)
    if system:
        messages.insert(0, {"role": "system", "content": system})
    _require_trained_assistant(messages, "conversations", at)
    return Example(
        kind="chat", source=at.source, messages=messages, extra=_extra(row, {"conversations", "system"})
    )


def _turn_list(turns: Any, at: Where) -> list[Any]:
    if not isinstance(turns, list) or not turns:
        got = "an empty array" if turns == [] else _describe(turns)
        raise at.error(f"must be a non-empty array of turns, got {got}", "conversations")
    return turns


def _sharegpt_turn(turn: Any, index: int, at: Where) -> dict[str, Any]:
    field = f"conversations[{index}]"
    if not isinstance(turn, dict):
        raise at.error(f"each turn must be an object, got {_describe(turn)}", field)
    unknown = sorted(set(turn) - {"from", "value", "weight"})
    if unknown:
        raise at.error(
            f"unknown turn key '{unknown[0]}'; allowed keys: from, value, weight", f"{field}.{unknown[0]}"
        )
    speaker = turn.get("from")
    if speaker == "function_call":
        raise at.error(
            "ShareGPT 'function_call' turns are not supported; write tool calls in "
            "OpenAI chat format (assistant message with tool_calls)",
            f"{field}.from",
        )
    if speaker not in _SHAREGPT_ROLES:
        shown = repr(speaker) if isinstance(speaker, str) else _describe(speaker)
        raise at.error(
            f"from must be one of human, gpt, system, tool (or user, assistant, observation), got {shown}",
            f"{field}.from",
        )
    value = turn.get("value")
    if not isinstance(value, str):
        raise at.error(f"value must be a string, got {_describe(value)}", f"{field}.value")
    message: dict[str, Any] = {"role": _SHAREGPT_ROLES[speaker], "content": value}
    if turn.get("weight") is not None:
        if message["role"] != "assistant":
            raise at.error("'weight' is only allowed on assistant (gpt) turns", f"{field}.weight")
        message["weight"] = _check_weight(turn["weight"], f"{field}.weight", at)
    return message


def _from_alpaca(row: dict[str, Any], at: Where) -> Example:
    """``instruction`` [+ ``input``] -> user, ``output`` -> assistant, ``system`` -> system.

    An empty ``input`` or ``system`` counts as absent (Alpaca data uses "" for "none").
    """
    instruction = _string(row, "instruction", at)
    extra_input = _string(row, "input", at, optional=True)
    output = _string(row, "output", at)
    system = _string(row, "system", at, optional=True)
    if row.get("history"):
        # Multi-turn Alpaca variants; silently ignoring earlier turns would lose data.
        raise at.error(
            "multi-turn 'history' is not supported in Alpaca rows; write the "
            "conversation in OpenAI chat format",
            "history",
        )
    user = f"{instruction}\n\n{extra_input}" if extra_input else instruction
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    consumed = {"instruction", "input", "output", "system", "history"}
    return Example(kind="chat", source=at.source, messages=messages, extra=_extra(row, consumed))


def _from_prompt_completion(row: dict[str, Any], at: Where) -> Example:
    """Two strings -> a ``completion`` example; two message arrays -> a ``chat`` example.

    In the chat case only the completion is trained: assistant turns inside ``prompt`` get
    ``weight: 0`` unless they set a weight themselves.
    """
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, str) and isinstance(completion, str):
        return Example(
            kind="completion",
            source=at.source,
            prompt=prompt,
            completion=completion,
            extra=_extra(row, {"prompt", "completion"}),
        )
    if not (isinstance(prompt, list) and isinstance(completion, list)):
        raise at.error(
            "prompt and completion must both be strings or both arrays of "
            f"messages, got {_describe(prompt)} and {_describe(completion)}",
            "completion" if isinstance(prompt, (str, list)) else "prompt",
        )
    prompt_messages = check_messages(prompt, "prompt", at)
    for message in prompt_messages:
        if message["role"] == "assistant":
            message.setdefault("weight", 0)
    completion_messages = check_messages(completion, "completion", at)
    for i, message in enumerate(completion_messages):
        if message["role"] != "assistant":
            raise at.error(
                f"completion messages must have role 'assistant', got '{message['role']}'",
                f"completion[{i}].role",
            )
    _require_trained_assistant(completion_messages, "completion", at)
    return Example(
        kind="chat",
        source=at.source,
        messages=prompt_messages + completion_messages,
        tools=_check_tools(row, at),
        extra=_extra(row, {"prompt", "completion", "tools"}),
    )


def _from_text(row: dict[str, Any], at: Where) -> Example:
    return Example(kind="text", source=at.source, text=_string(row, "text", at), extra=_extra(row, {"text"}))


_NORMALISERS: dict[str, Callable[[dict[str, Any], Where], Example]] = {
    OPENAI_CHAT: _from_openai_chat,
    SHAREGPT: _from_sharegpt,
    ALPACA: _from_alpaca,
    PROMPT_COMPLETION: _from_prompt_completion,
    TEXT: _from_text,
}
