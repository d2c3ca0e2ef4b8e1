"""``tunesmith data check``: every problem of a data file in one streaming pass.

Training stops at the first bad line; :func:`check_file` instead reports *all* of them, each with
its 1-based line number (the physical line of a ``.jsonl`` file), the 1-based message index where
one applies, a stable code and a sentence in OpenAI's wording (``Invalid file format. Example 12,
message 3 …``). Codes are listed in :data:`~tunesmith.data.tools.check_report.CODES`; OpenAI's own codes and those of its cookbook
are reused where they exist.

Memory is bounded per row, not per file: rows are parsed, checked and dropped; only two 64-bit
hashes (duplicates, see :mod:`tunesmith.data.tools.dedup`) and one token count per example are kept,
plus at most ``max_listed`` problems per code (the rest are only counted).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
from .check_report import MIN_EXAMPLES, CheckReport, describe_value, where
from .check_rules import RowRules, special_token_pattern
from .dedup import DuplicateIndex
from .estimate import TokenStats, estimate_for, stats_example

METHODS = tuple(name for name, spec in REGISTERED.items() if spec.checked)
DEFAULT_MAX_LENGTH = 1024  # the default of train.max_length

Progress = Callable[[int, int], None]
"""``progress(bytes_done, bytes_total)``, called every few hundred rows and at the end."""


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
                f"{where(number)} is not valid UTF-8 (byte "
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
                f"{where(number)} cannot be parsed. Error: line contains invalid json: {err} (line {number})",
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


def iter_file(path: Path, progress: Progress | None) -> Iterator[_Row]:
    if not path.exists():
        raise DataError("file not found", path=str(path))
    if path.is_dir():
        if readers.is_saved_dataset(path):  # a datasets save_to_disk folder: read like Parquet
            return _iter_other(path, progress)
        raise DataError("this is a directory; expected a data file", path=str(path))
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return _iter_jsonl(path, progress)
    readers._reader_for(path)  # raises the "unsupported file type" error up front
    return _iter_other(path, progress)


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
        for row in iter_file(path, progress):
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
        rules = RowRules(self.report, self.param, self.special)
        if not isinstance(value, dict):
            rules.add("data_type", line, f"{where(line)} is not a JSON object (got {describe_value(value)})")
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

    def _has_keys(self, rules: RowRules, value: dict, fmt: str, line: int) -> bool:
        missing = [key for key in F._KEYS[fmt] if value.get(key) is None]
        if fmt == F.OPENAI_CHAT and missing:
            rules.add("missing_messages_list", line, f"{where(line)} has no 'messages' list")
            return False
        for key in missing:  # OpenAI: "Invalid file format. Example 1 is missing key 'input'."
            rules.add("missing_key", line, f"{where(line)} is missing key '{key}'.")
        if missing:
            return False
        found = F.detect_format(value)
        if fmt != F.OPENAI_CHAT and found != fmt:
            rules.add(
                "format_mismatch",
                line,
                f"{where(line)} looks like "
                f"{F.FORMAT_LABELS.get(found or '', 'unknown')} data, but line "
                f"{self.first_line} is {F.FORMAT_LABELS[fmt]}; a file holds one format",
            )
            return False
        return True

    def _check(self, rules: RowRules, value: dict, fmt: str, line: int) -> Example | None:
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
                f"{where(line)}: {err.bare_message}" + (f" (field {err.field})" if err.field else ""),
            )
            return None
