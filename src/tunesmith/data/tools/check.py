"""``tunesmith data check``: every problem of a data file in one streaming pass.

Training stops at the first bad line; :func:`check_file` instead reports *all* of them, each with
its 1-based line number (the physical line of a ``.jsonl`` file), the 1-based message index where
one applies, a stable code and a sentence in OpenAI's wording (``Invalid file format. Example 12,
message 3 …``). Codes are listed in :data:`CODES`; OpenAI's own codes and those of its cookbook
are reused where they exist.

Memory is bounded per row, not per file: rows are parsed, checked and dropped; only two 64-bit
hashes (duplicates, see :mod:`tunesmith.data.tools.dedup`) and one token count per example are kept,
plus at most ``max_listed`` problems per code (the rest are only counted).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from ... import jsontext
from ...config.registry import METHODS as REGISTERED
from ...config.registry import suggest_method
from ...errors import DataError
from .. import formats as F
from .. import readers
from ..example import Example
from .dedup import DuplicateIndex
from .estimate import TokenStats, estimate_for, stats_example

METHODS = tuple(name for name, spec in REGISTERED.items() if spec.checked)
MIN_EXAMPLES = 10  # OpenAI's minimum (invalid_n_examples)
DEFAULT_MAX_LENGTH = 1024  # the default of train.max_length

CODES: dict[str, str] = {
    # file level
    "invalid_n_examples": "fewer than 10 examples in the training file",
    "invalid_utf8": "a line is not valid UTF-8",
    "invalid_json": "a line cannot be parsed as JSON",
    "unreadable_file": "a non-JSONL file stopped parsing (reported once, at the failing row)",
    "format_method_mismatch": "the file's format does not suit --method",
    "format_mismatch": "a row has a different format from the first row",
    # row level (cookbook codes first)
    "data_type": "a row or message is not a JSON object",
    "missing_messages_list": "no non-empty 'messages' array",
    "message_missing_key": "a message has no 'role' or no 'content'",
    "message_unrecognized_key": "a message has a key outside the allowed set",
    "unrecognized_role": "a role other than system, user, assistant, tool (developer)",
    "missing_content": "content is null without tool_calls",
    "invalid_content": "content is not a string",
    "example_missing_assistant_message": "no assistant message to train on",
    "no_trained_messages": "every assistant message has weight 0",
    "invalid_weight": "weight other than 0 or 1",
    "weight_on_non_assistant": "weight on a non-assistant message",
    "assistant_only_key": "tool_calls / function_call / reasoning on a non-assistant message",
    "tool_message_missing_tool_call_id": "tool message without tool_call_id",
    "invalid_tool_calls": "tool_calls is not an array of {function: {name, arguments}}",
    "tool_call_arguments_not_string": "tool_calls[].function.arguments is not a string",
    "tool_call_arguments_invalid_json": "tool_calls[].function.arguments is not valid JSON",
    "invalid_tools": "tools is not an array of objects",
    "special_token_in_text": "a special token of the tokenizer appears literally in text",
    "invalid_unicode": "text holds a lone surrogate (an unpaired \\ud800-\\udfff escape)",
    "missing_key": "a required key of the format is missing (DPO: input / preferred_output …)",
    "invalid_preference_output": "a DPO output is not exactly one assistant message",
    "invalid_example": "a row the normaliser rejects (non-chat formats)",
    "template_error": "the chat template cannot render the example or derive its mask",
}
WARNING_CODES: dict[str, str] = {
    "empty_content": "a message's content is empty",
    "example_truncated": "longer than max_length; training removes tokens from the end",
    "no_trained_tokens": "no trained token (after truncation); training drops the example",
    "duplicate_examples": "exact or near-duplicate rows (see duplicates)",
    "train_eval_overlap": "rows of the eval file also in the training file",
}

_ROLES = frozenset(F.ROLES) | {"developer"}
_ASSISTANT_ONLY = ("tool_calls", "function_call", "thinking", "reasoning_content")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

Progress = Callable[[int, int], None]
"""``progress(bytes_done, bytes_total)``, called every few hundred rows and at the end."""


# ---- the report ---------------------------------------------------------------------------


@dataclass
class CheckReport:
    """Result of :func:`check_file`. ``ok`` is True when there is no error (warnings allowed).

    ``errors`` / ``warnings``: dicts ``{code, line, message_index, message, param}`` (``line`` and
    ``message_index`` 1-based or None, ``param`` ``training_file`` or ``validation_file``), at
    most ``max_listed`` per code; ``error_counts`` / ``warning_counts`` hold the full counts.
    """

    path: str
    method: str
    format: str | None = None
    n_examples: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    error_counts: dict[str, int] = field(default_factory=dict)
    warning_counts: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    duplicates: dict[str, Any] = field(default_factory=dict)
    max_listed: int = 100

    @property
    def ok(self) -> bool:
        return not self.error_counts

    def add(
        self,
        code: str,
        line: int | None,
        message: str,
        message_index: int | None = None,
        param: str = "training_file",
    ) -> None:
        """Record a problem; its severity follows from the code (:data:`WARNING_CODES`)."""
        warning = code in WARNING_CODES
        counts = self.warning_counts if warning else self.error_counts
        counts[code] = counts.get(code, 0) + 1
        if counts[code] <= self.max_listed:
            (self.warnings if warning else self.errors).append(
                {
                    "code": code,
                    "line": line,
                    "message_index": message_index,
                    "message": message,
                    "param": param,
                }
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the whole report."""
        return {
            "path": self.path,
            "ok": self.ok,
            "method": self.method,
            "format": self.format,
            "n_examples": self.n_examples,
            "error_counts": self.error_counts,
            "warning_counts": self.warning_counts,
            "errors": self.errors,
            "warnings": self.warnings,
            "stats": self.stats,
            "duplicates": self.duplicates,
        }

    def job_error(self) -> dict[str, str] | None:
        """The OpenAI job ``error`` object for the first problem, or None when ok.

        ``invalid_n_examples`` keeps its code and message; every other problem becomes
        ``invalid_file_format`` with OpenAI's "The job failed due to a file format error …" text.
        """
        if self.ok:
            return None
        for err in self.errors:
            if err["code"] == "invalid_n_examples":
                return {"code": err["code"], "message": err["message"], "param": err["param"]}
        first = self.errors[0]
        which = "training" if first["param"] == "training_file" else "validation"
        return {
            "code": "invalid_file_format",
            "param": first["param"],
            "message": f"The job failed due to a file format error in the {which} file. " + first["message"],
        }


def _where(line: int, message_index: int | None = None) -> str:
    text = f"Invalid file format. Example {line}"
    return text + (f", message {message_index}" if message_index else "")


def _kind(value: Any) -> str:
    return F._describe(value)


# ---- reading lines ------------------------------------------------------------------------


@dataclass
class _Row:
    line: int
    value: Any = None
    problem: tuple[str, str] | None = None  # (code, message) when the line cannot be parsed


def _iter_jsonl(path: Path, progress: Progress | None) -> Iterator[_Row]:
    """Every non-blank line, parsed or with its parse problem; never raises for bad content."""
    total = path.stat().st_size
    done = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            done += len(raw)
            if progress is not None and number % 512 == 0:
                progress(done, total)
            yield from _parse_line(raw, number)
    if progress is not None:
        progress(total, total)


def _parse_line(raw: bytes, number: int) -> Iterator[_Row]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        yield _Row(
            number,
            problem=(
                "invalid_utf8",
                f"{_where(number)} is not valid UTF-8 (byte "
                f"0x{raw[err.start]:02x} at byte {err.start + 1} of the "
                "line); data files must be UTF-8 encoded",
            ),
        )
        return
    text = (text.removeprefix("\ufeff") if number == 1 else text).rstrip("\r\n")
    if not text.strip():
        return
    try:
        yield _Row(number, jsontext.loads(text, allow_surrogates=True))  # Checker.texts names the message
    except json.JSONDecodeError as err:
        # OpenAI's wording: "Example 1273 cannot be parsed. Error: line contains invalid json: ..."
        yield _Row(
            number,
            problem=(
                "invalid_json",
                f"{_where(number)} cannot be parsed. Error: "
                f"line contains invalid json: {err} (line {number})",
            ),
        )


def _iter_other(path: Path, progress: Progress | None) -> Iterator[_Row]:
    """Non-JSONL files go through the training reader, which stops at its first parse error."""
    try:
        for number, value in readers.iter_rows(path):
            yield _Row(number, value)
    except DataError as err:
        code = (
            "invalid_utf8"
            if "UTF-8" in err.bare_message
            else "invalid_json"
            if "invalid JSON" in err.bare_message
            else "unreadable_file"
        )
        if "is empty" not in err.bare_message:
            yield _Row(err.line or 0, problem=(code, str(err)))
    if progress is not None:
        size = path.stat().st_size
        progress(size, size)


def _iter_file(path: Path, progress: Progress | None) -> Iterator[_Row]:
    if not path.exists():
        raise DataError("file not found", path=str(path))
    if path.is_dir():
        raise DataError("this is a directory; expected a data file", path=str(path))
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return _iter_jsonl(path, progress)
    readers._reader_for(path)  # raises the "unsupported file type" error up front
    return _iter_other(path, progress)


# ---- per-row rules ------------------------------------------------------------------------


class _Rules:
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
                    f"{_where(line, index)} contains a lone "
                    "surrogate (an unpaired \\ud800-\\udfff escape), which is not text",
                    index,
                )
            found = self.special.search(text) if self.special else None
            if found:
                self.add(
                    "special_token_in_text",
                    line,
                    f"{_where(line, index)} contains an invalid token: {found.group(0)}",
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
            got = "an empty array" if value == [] else _kind(value)
            self.add(
                "missing_messages_list",
                line,
                f"{_where(line)} needs a non-empty '{field}' array of messages, got {got}",
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
                f"{_where(line)} has no assistant message to train on",
            )
        elif need_assistant and assistants and all(m.get("weight", 1) == 0 for m in assistants):
            self.add(
                "no_trained_messages",
                line,
                f"{_where(line)} has weight 0 on every assistant message, so there is nothing to train on",
            )

    def message(self, message: Any, line: int, j: int | None, field: str) -> None:
        at = _where(line, j) if j else f"{_where(line)}, {field}"
        if not isinstance(message, dict):
            self.add("data_type", line, f"{at} is not an object (got {_kind(message)})", j)
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
            shown = repr(role) if isinstance(role, str) else _kind(role)
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
                f"{at} has content of type {_kind(content)}; content must be a string",
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
                f"{at} has tool_calls of type {_kind(calls)}; expected an array",
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
                    f"function.arguments is {_kind(arguments)}; it must be a JSON string "
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
                f"{_where(line)} has 'tools' of type {_kind(tools)}; expected an array of tool definitions",
            )

    # -- OpenAI preference ----------------------------------------------------------------------
    def preference_row(self, row: dict, line: int) -> None:
        source = row.get("input")
        if not isinstance(source, dict):
            self.add(
                "missing_messages_list",
                line,
                f"{_where(line)} needs 'input' to be an object with a 'messages' array, got {_kind(source)}",
            )
        else:
            self.messages(source.get("messages"), line, field="input.messages", need_assistant=False)
        for key in ("preferred_output", "non_preferred_output"):
            self.preference_output(row.get(key), key, line)

    def preference_output(self, value: Any, key: str, line: int) -> None:
        if not isinstance(value, list) or len(value) != 1:
            got = f"{len(value)} messages" if isinstance(value, list) else _kind(value)
            self.add(
                "invalid_preference_output",
                line,
                f"{_where(line)}: '{key}' must be an array of exactly one assistant message, got {got}",
            )
            return
        message = value[0]
        if isinstance(message, dict) and message.get("role") != "assistant":
            self.add(
                "invalid_preference_output",
                line,
                f"{_where(line)}: '{key}' must be an assistant message, got role {message.get('role')!r}",
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
                    f"{_where(line)}: '{key}' must be a string or an array of messages, got {_kind(value)}",
                )
        if fmt == F.KTO and not isinstance(row.get("label"), bool):
            self.add(
                "invalid_example",
                line,
                f"{_where(line)}: 'label' must be true or false, got {_kind(row.get('label'))}",
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


# ---- the scan -------------------------------------------------------------------------------


def check_file(
    path: str | PathLike[str],
    *,
    tokenizer: Any = None,
    method: str = "sft",
    max_length: int | None = None,
    eval_path: str | PathLike[str] | None = None,
    model_dir: str | PathLike[str] | None = None,
    adapter: str = "lora",
    progress: Progress | None = None,
    min_examples: int = MIN_EXAMPLES,
    max_listed: int = 100,
    flop_rate: float | None = None,
) -> CheckReport:
    """Check every line of ``path`` for ``method``; never prints, never stops at a bad line.

    - ``tokenizer`` (a fast HF tokenizer) enables the special-token check and token statistics
      (``stats["tokens"]``), with truncation at ``max_length`` (default 1024, as training).
    - ``model_dir`` (a model folder with safetensors) adds ``stats["estimate"]`` (see
      :mod:`tunesmith.data.tools.estimate`) for ``adapter`` (lora, dora, qlora, or none = full).
    - ``eval_path`` is checked too (problems carry ``param="validation_file"``) and its rows
      that duplicate training rows are reported (``duplicates["eval_overlap"]``).
    - ``progress(bytes_done, bytes_total)`` is called while the training file is read.

    Raises :class:`DataError` only when a file cannot be read at all (missing, a directory, an
    unsupported suffix); ``ValueError`` for an unknown ``method``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    report = CheckReport(str(path), method, max_listed=max_listed)
    special = special_token_pattern(tokenizer) if tokenizer is not None else None
    tokens = None
    if tokenizer is not None:
        tokens = TokenStats(
            tokenizer,
            max_length or DEFAULT_MAX_LENGTH,
            lambda code, line, message: report.add(code, line, message),
        )
    index = DuplicateIndex()
    train = _Scan(report, "training_file", method, special, tokens=tokens, index=index)
    train.run(Path(path), progress)
    report.format, report.n_examples = train.format, train.n_examples
    if train.n_examples < min_examples:
        report.add(
            "invalid_n_examples",
            None,
            f"Training file has {train.n_examples} "
            f"example(s), but must have at least {min_examples} examples",
        )
    report.duplicates = _duplicate_section(index, report)
    if eval_path is not None:
        held_out = _Scan(report, "validation_file", method, special, against=index)
        held_out.run(Path(eval_path), None)
        report.duplicates["eval_overlap"] = held_out.overlap
        report.duplicates["eval_overlap_count"] = held_out.overlap_count
        report.stats["eval_examples"] = held_out.n_examples
    report.stats["examples"] = train.n_examples
    if tokens is not None:
        report.stats["tokens"] = tokens.summary()
        if model_dir is not None:
            report.stats["estimate"] = estimate_for(
                model_dir, report.stats["tokens"], method, adapter, flop_rate
            )
    return report


def _duplicate_section(index: DuplicateIndex, report: CheckReport) -> dict[str, Any]:
    groups = index.groups()
    if groups:
        rows = len({line for group in groups for line in group["lines"]})
        shown = "; ".join(", ".join(map(str, g["lines"][:5])) for g in groups[:3])
        report.add(
            "duplicate_examples",
            groups[0]["lines"][0],
            f"{len(groups)} group(s) of duplicate examples ({rows} rows), e.g. lines {shown}",
        )
    return {"groups": groups[: report.max_listed], "group_count": len(groups)}


class _Scan:
    """One pass over one file: parse, check, hash and (optionally) count tokens per row."""

    def __init__(
        self,
        report: CheckReport,
        param: str,
        method: str,
        special: re.Pattern[str] | None,
        *,
        tokens: Any = None,
        index: DuplicateIndex | None = None,
        against: DuplicateIndex | None = None,
    ):
        self.report, self.param, self.method, self.special = report, param, method, special
        self.tokens, self.index, self.against = tokens, index, against
        self.format: str | None = None
        self.first_line = 0
        self.skip_rules = False  # the whole file is the wrong format: said once, not per row
        self.n_examples = self.overlap_count = 0
        self.overlap: list[dict[str, int]] = []
        self.path = ""

    def run(self, path: Path, progress: Progress | None) -> None:
        self.path = str(path)
        for row in _iter_file(path, progress):
            self.n_examples += 1
            if row.problem is not None:
                self.report.add(row.problem[0], row.line, row.problem[1], None, self.param)
                continue
            if self.index is not None:
                self.index.add(row.line, row.value)
            if self.against is not None:
                self._overlap(row)
            self._row(row.value, row.line)
        if self.tokens is not None:
            self.tokens.flush()

    def _overlap(self, row: _Row) -> None:
        train_line = self.against.first_line_of(row.value)
        if train_line is None:
            return
        self.overlap_count += 1
        if len(self.overlap) < self.report.max_listed:
            self.overlap.append({"eval_line": row.line, "train_line": train_line})
        self.report.add(
            "train_eval_overlap",
            row.line,
            f"Example {row.line} of the eval file duplicates line {train_line} of the training file",
            None,
            self.param,
        )

    def _row(self, value: Any, line: int) -> None:
        rules = _Rules(self.report, self.param, self.special)
        if not isinstance(value, dict):
            rules.add("data_type", line, f"{_where(line)} is not a JSON object (got {_kind(value)})")
            return
        fmt = self._file_format(value, line)
        if self.skip_rules or not self._has_keys(rules, value, fmt, line):
            return
        example = self._check(rules, value, fmt, line)
        if example is not None and rules.row_errors == 0 and self.tokens is not None:
            self.tokens.add(line, example)

    def _file_format(self, value: dict, line: int) -> str:
        if self.format is None:
            found = F.detect_format(value)
            allowed = REGISTERED[self.method].formats
            self.format, self.first_line = found or allowed[0], line
            if found is not None and found not in allowed:
                wanted = " or ".join(F.FORMAT_LABELS[f] for f in sorted(allowed))
                self.report.add(
                    "format_method_mismatch",
                    line,
                    f"The file looks like "
                    f"{F.FORMAT_LABELS[found]} data (judging by line {line}), but "
                    f"method {self.method} needs {wanted} rows; train it with "
                    f"method {suggest_method(found)}",
                    None,
                    self.param,
                )
                self.skip_rules = True
        return self.format

    def _has_keys(self, rules: _Rules, value: dict, fmt: str, line: int) -> bool:
        missing = [key for key in F._KEYS[fmt] if value.get(key) is None]
        if fmt == F.OPENAI_CHAT and missing:
            rules.add("missing_messages_list", line, f"{_where(line)} has no 'messages' list")
            return False
        for key in missing:  # OpenAI: "Invalid file format. Example 1 is missing key 'input'."
            rules.add("missing_key", line, f"{_where(line)} is missing key '{key}'.")
        if missing:
            return False
        found = F.detect_format(value)
        if fmt != F.OPENAI_CHAT and found != fmt:
            rules.add(
                "format_mismatch",
                line,
                f"{_where(line)} looks like "
                f"{F.FORMAT_LABELS.get(found or '', 'unknown')} data, but line "
                f"{self.first_line} is {F.FORMAT_LABELS[fmt]}; a file holds one format",
            )
            return False
        return True

    def _check(self, rules: _Rules, value: dict, fmt: str, line: int) -> Example | None:
        """Run the rules of ``fmt``; return the example for token statistics, if it has one."""
        if fmt == F.OPENAI_CHAT:
            rules.chat_row(value, line)
        elif fmt == F.OPENAI_PREFERENCE:
            rules.preference_row(value, line)
        elif fmt in (F.PREFERENCE_PAIRS, F.KTO, F.PROMPT_ONLY):
            rules.simple_row(value, fmt, line)
        else:
            rules.texts(value, line)
        if rules.row_errors:
            return None
        try:
            return stats_example(value, fmt, self.path, line)
        except DataError as err:  # a rule the checks above missed: still one line, one error
            rules.add(
                "invalid_example",
                line,
                f"{_where(line)}: {err.bare_message}" + (f" (field {err.field})" if err.field else ""),
            )
            return None
