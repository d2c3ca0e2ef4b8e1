"""Convert SFT data between the accepted formats (``tunesmith data convert``).

Every row is read into an :class:`~tunesmith.data.example.Example` (so all the format checks
of :mod:`tunesmith.data.formats` apply) and written in the target shape. A conversion is
**lossless** when the written row, read back, gives the same example (same messages, roles,
trained turns, tools and extra fields); every other conversion is refused for that row with
a :class:`DataError` naming the line, or, with ``skip_lossy``, skipped and counted. Rows
that cannot be represented at all:

- ``alpaca``: one instruction and one output; needs exactly [system] + user + assistant,
  a trained assistant turn, no tools / tool calls / names / reasoning fields.
- ``sharegpt``: ``{from, value, weight}`` turns only; no tools, tool calls, names, reasoning
  fields or ``tool_call_id``.
- ``prompt-completion``: the last message must be a trained assistant turn (it becomes the
  completion); trained assistant turns before it keep ``"weight": 1`` explicitly, because a
  prompt's assistant turns are untrained by default.
- raw ``text`` rows have no turns and convert to nothing.

A string prompt/completion row (trained without a chat template) becomes a user + assistant
exchange in the chat formats and in Alpaca; the words are kept, but it will be trained
through the model's chat template from then on. Fields a format does not consume (``id``,
``source``, ...) are kept at the top level of the output, after the format's own keys; one
whose name the target format would read (e.g. an extra ``system`` going to Alpaca) is lossy.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from os import PathLike
from typing import Any

from tunesmith.data.example import Example
from tunesmith.data.formats import (
    ALPACA,
    FORMAT_LABELS,
    OPENAI_CHAT,
    PROMPT_COMPLETION,
    SHAREGPT,
    TEXT,
    detect_format,
    iter_format_rows,
    to_example,
)
from tunesmith.data.tools.scrub import check_output_paths
from tunesmith.errors import DataError, TunesmithError
from tunesmith.files import write_atomically

TARGETS = {
    "openai-chat": OPENAI_CHAT,
    "sharegpt": SHAREGPT,
    "alpaca": ALPACA,
    "prompt-completion": PROMPT_COMPLETION,
}
_SOURCES = frozenset({OPENAI_CHAT, SHAREGPT, ALPACA, PROMPT_COMPLETION, TEXT})

# Keys each target's reader consumes: an extra field with one of these names would be read
# as data. (Extra fields that would change format detection are caught by the round trip.)
_CONSUMED = {
    OPENAI_CHAT: {"messages", "tools"},
    SHAREGPT: {"conversations", "system"},
    ALPACA: {"instruction", "input", "output", "system", "history"},
    PROMPT_COMPLETION: {"prompt", "completion", "tools"},
}
_SHAREGPT_FROM = {"system": "system", "user": "human", "assistant": "gpt", "tool": "tool"}


class LossyConversion(Exception):
    """A row the target format cannot hold without losing something; the message says what."""


def convert_file(
    in_path: str | PathLike[str], out_path: str | PathLike[str], to: str, skip_lossy: bool = False
) -> dict[str, Any]:
    """Convert every row of ``in_path`` to format ``to``, written as JSON Lines to ``out_path``.

    ``to`` is one of :data:`TARGETS` (``openai-chat``, ``sharegpt``, ``alpaca``,
    ``prompt-completion``; underscores are accepted too). The input may be any SFT format in
    any file type :mod:`~tunesmith.data.readers` reads. Output is written to a temporary file
    and renamed into place only when complete. Returns::

        {"input": str, "output": str, "from": "OpenAI chat", "to": "alpaca",
         "rows": int, "written": int, "skipped_lossy": int,
         "skipped": [{"line": int, "reason": str}, ...]}

    Raises :class:`TunesmithError` for an unknown ``to`` or an output that is the input file;
    :class:`DataError` for unreadable or invalid input, a non-SFT format (preference data),
    and, without ``skip_lossy``, the first row that cannot be converted losslessly (the
    output file is then not written).
    """
    target = _target(to)
    check_output_paths(in_path, out_path)
    report: dict[str, Any] = {
        "input": str(in_path),
        "output": str(out_path),
        "from": None,
        "to": _target_name(target),
        "rows": 0,
        "written": 0,
        "skipped_lossy": 0,
        "skipped": [],
    }
    write_atomically(out_path, _converted_lines(in_path, target, skip_lossy, report))
    return report


def _target(to: str) -> str:
    target = TARGETS.get(str(to).strip().lower().replace("_", "-"))
    if target is None:
        raise TunesmithError(f"unknown target format {to!r}; choose one of " + ", ".join(TARGETS))
    return target


def _target_name(target: str) -> str:
    return next(name for name, value in TARGETS.items() if value == target)


def _converted_lines(in_path: Any, target: str, skip_lossy: bool, report: dict[str, Any]) -> Iterator[str]:
    """Yield output lines, updating ``report`` counts as rows are read."""
    for line, file_format, row in iter_format_rows(in_path):
        if file_format not in _SOURCES:
            raise DataError(
                f"this file holds {FORMAT_LABELS[file_format]} data; convert "
                "handles SFT formats only (OpenAI chat, ShareGPT, Alpaca, "
                "prompt/completion, text)",
                path=str(in_path),
                line=line,
            )
        report["from"] = FORMAT_LABELS[file_format]
        report["rows"] += 1
        example = to_example(row, file_format, str(in_path), line)
        try:
            converted = convert_example(example, target)
        except LossyConversion as err:
            if not skip_lossy:
                raise DataError(
                    f"cannot convert this row to {_target_name(target)} without "
                    f"losing data: {err}; pass --skip-lossy to skip such rows",
                    path=str(in_path),
                    line=line,
                ) from None
            report["skipped_lossy"] += 1
            report["skipped"].append({"line": line, "reason": str(err)})
            continue
        report["written"] += 1
        yield json.dumps(converted, ensure_ascii=False) + "\n"


def convert_example(example: Example, target: str) -> dict[str, Any]:
    """Return ``example`` as a row of format ``target`` (a value of :data:`TARGETS`).

    Raises :class:`LossyConversion` if the row could not be read back as the same example.
    """
    if example.kind == "text":
        raise LossyConversion("a raw text row has no prompt or turns to convert")
    _check_extra(example.extra, target)
    build = {
        OPENAI_CHAT: _to_openai_chat,
        SHAREGPT: _to_sharegpt,
        ALPACA: _to_alpaca,
        PROMPT_COMPLETION: _to_prompt_completion,
    }[target]
    row = {**build(example), **copy.deepcopy(example.extra)}
    _check_round_trip(example, row, target)
    return row


def _check_extra(extra: dict[str, Any], target: str) -> None:
    for key in extra:
        if key in _CONSUMED[target]:
            raise LossyConversion(
                f"its extra field '{key}' would be read as part of the {FORMAT_LABELS[target]} format"
            )


# ---- one builder per target ---------------------------------------------------------------


def _messages(example: Example) -> list[dict[str, Any]]:
    """The example as chat messages (a string prompt/completion becomes user + assistant)."""
    if example.kind == "completion":
        return [
            {"role": "user", "content": example.prompt},
            {"role": "assistant", "content": example.completion},
        ]
    return copy.deepcopy(example.messages or [])


def _to_openai_chat(example: Example) -> dict[str, Any]:
    row: dict[str, Any] = {"messages": _messages(example)}
    if example.tools is not None:
        row["tools"] = copy.deepcopy(example.tools)
    return row


def _to_sharegpt(example: Example) -> dict[str, Any]:
    if example.tools:
        raise LossyConversion("it has tool definitions, which ShareGPT rows cannot hold")
    turns = []
    for index, message in enumerate(_messages(example)):
        _only_keys(message, {"role", "content", "weight"}, index, "ShareGPT turns")
        turn = {"from": _SHAREGPT_FROM[message["role"]], "value": message["content"]}
        if "weight" in message:
            turn["weight"] = message["weight"]
        turns.append(turn)
    return {"conversations": turns}


def _to_alpaca(example: Example) -> dict[str, Any]:
    if example.tools:
        raise LossyConversion("it has tool definitions, which Alpaca rows cannot hold")
    messages = _messages(example)
    system = messages.pop(0)["content"] if messages and messages[0]["role"] == "system" else None
    roles = [m["role"] for m in messages]
    if roles != ["user", "assistant"]:
        raise LossyConversion(
            f"Alpaca holds one user instruction and one assistant output, "
            f"but this conversation has {_describe_roles(roles)}"
        )
    for index, message in enumerate(messages):
        _only_keys(message, {"role", "content", "weight"}, index, "Alpaca rows")
    if messages[1].get("weight", 1) == 0:
        raise LossyConversion(
            "its assistant turn has weight 0 (untrained), but an Alpaca output is always trained"
        )
    row = {"system": system} if system is not None else {}
    row.update(instruction=messages[0]["content"], input="", output=messages[1]["content"])
    return row


def _to_prompt_completion(example: Example) -> dict[str, Any]:
    if example.kind == "completion":
        return {"prompt": example.prompt, "completion": example.completion}
    messages = _messages(example)
    last = messages[-1]
    if last["role"] != "assistant" or last.get("weight", 1) == 0:
        raise LossyConversion(
            "the conversation does not end with a trained assistant turn to become the completion"
        )
    if len(messages) == 1:
        raise LossyConversion("the conversation has no turns before the assistant turn to become the prompt")
    prompt = messages[:-1]
    for message in prompt:
        if message["role"] == "assistant":
            # Prompt assistant turns are untrained unless they say otherwise; keep training.
            message.setdefault("weight", 1)
    row: dict[str, Any] = {"prompt": prompt, "completion": [last]}
    if example.tools is not None:
        row["tools"] = copy.deepcopy(example.tools)
    return row


def _only_keys(message: dict[str, Any], allowed: set[str], index: int, where: str) -> None:
    for key in message:
        if key not in allowed:
            raise LossyConversion(f"message {index} has '{key}', which {where} cannot hold")
    if message.get("content") is None:
        raise LossyConversion(f"message {index} has no content, which {where} cannot hold")


def _describe_roles(roles: list[str]) -> str:
    return f"{len(roles)} non-system messages ({', '.join(roles)})"


# ---- the safety net -----------------------------------------------------------------------


def _check_round_trip(example: Example, row: dict[str, Any], target: str) -> None:
    """Read ``row`` back and compare with ``example``; raise LossyConversion on a difference.

    The builders refuse every loss they know of with a specific reason; this catches the
    rest (e.g. an empty system message, which Alpaca and ShareGPT readers drop).
    """
    found = detect_format(row)
    if found != target:
        raise LossyConversion(
            f"with its extra fields the converted row would be read as "
            f"{FORMAT_LABELS.get(found or '', 'unknown')} data"
        )
    try:
        again = to_example(row, target, "<converted>", 0)
    except DataError as err:
        raise LossyConversion(f"the converted row would be invalid ({err.bare_message})") from None
    chat = again.kind == "chat"
    if _canonical(again, chat) != _canonical(example, chat):
        raise LossyConversion(
            f"the converted row would not read back the same as {FORMAT_LABELS[target]} data"
        )


def _canonical(example: Example, chat: bool) -> tuple[Any, ...]:
    """What a conversion must preserve. ``chat``: compare string prompt/completion examples
    as the user + assistant exchange they become. Weight 1 is the default; drop it."""
    if chat and example.kind != "text":
        messages = [
            {k: v for k, v in m.items() if not (k == "weight" and v == 1)} for m in _messages(example)
        ]
        return ("chat", messages, example.tools or None, example.extra)
    return (example.kind, example.prompt, example.completion, example.text, example.extra)
