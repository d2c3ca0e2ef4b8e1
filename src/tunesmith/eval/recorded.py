"""Recorded answers: a model whose replies are read from a file instead of generated.

``tunesmith openai record`` writes one JSON object per held-out row it asked a model about
(see docs/migrate-from-openai.md)::

    {"index": 3, "row_sha256": "…", "source": "heldout.jsonl, line 4",
     "request": {"model": "ft:…", "messages": [...], "temperature": 0.0, "max_tokens": 256, "seed": 0},
     "response": {"id": "…", "model": "…", "finish_reason": "stop", "usage": {...}, …},
     "answer": "…", "reference": "…" | null}

``index`` is the row's position among the evaluation items of the held-out file (as
:func:`tunesmith.eval.data.load_eval_data` numbers them) and ``row_sha256`` the hash of the row
as written (:func:`row_sha256`), so ``tunesmith eval --against FILE`` can tell that an answer
belongs to the row it scores. This module owns that file format: the writer
(:mod:`tunesmith.migrate.record`) and the reader here use the same hash and keys.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

REQUIRED_KEYS = ("index", "row_sha256", "request", "answer")


def row_sha256(row: Any) -> str:
    """SHA-256 of a held-out row's canonical JSON (sorted keys, no spaces, UTF-8): the same
    row gives the same hash however its file spaced or ordered it."""
    text = json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class RecordedFile:
    """The answers of a recorded file by item index, and the request of its first row."""

    path: str
    rows: dict[int, dict]
    torn_tail: bool = False
    """The last line was cut off (an interrupted recording); it is ignored."""

    @property
    def request(self) -> dict:
        """The request parameters (without the messages) of the lowest-index row."""
        if not self.rows:
            return {}
        first = self.rows[min(self.rows)]["request"]
        return {k: v for k, v in first.items() if k != "messages"}


def read_recorded(path: str | Path) -> RecordedFile:
    """Read a recorded-answers file. A missing file, a bad line (other than a torn last line)
    or a row without the keys of the format is a ConfigError naming the file and line; a row
    index recorded twice keeps the first (appending never rewrites)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--against {path}: no such file (record one with tunesmith openai record)")
    lines = p.read_bytes().split(b"\n")
    out = RecordedFile(str(path), {})
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except ValueError:
            if number == len(lines):  # no newline after it: a write cut off by a kill
                out.torn_tail = True
                continue
            raise ConfigError(
                f"{path}, line {number}: not a JSON object (a recorded-answers file "
                "is written by tunesmith openai record)"
            ) from None
        missing = [k for k in REQUIRED_KEYS if not isinstance(row, dict) or k not in row]
        if missing:
            raise ConfigError(
                f"{path}, line {number}: missing '{missing[0]}' (a recorded-answers "
                "file is written by tunesmith openai record)"
            )
        if not isinstance(row["index"], int) or row["index"] < 0 or not isinstance(row["answer"], str):
            raise ConfigError(
                f"{path}, line {number}: 'index' must be a row number >= 0 and 'answer' a string"
            )
        out.rows.setdefault(row["index"], row)
    return out


def match_answers(recorded: RecordedFile, items: list, data_path: str) -> list[str | None]:
    """The recorded answer of every held-out item (:class:`~.data.EvalItem`, whose ``row`` is
    the row as written; None where none was recorded). A recorded row whose hash differs from
    the held-out row at its index is a ConfigError: the answers were recorded for another
    file, or the file changed."""
    answers: list[str | None] = [None] * len(items)
    for index, rec in recorded.rows.items():
        if index >= len(items):
            continue
        if rec["row_sha256"] != row_sha256(items[index].row):
            raise ConfigError(
                f"{recorded.path}: the answer recorded as row {index} "
                f"({rec.get('source', '?')}) was asked for a different row than "
                f"{items[index].source} (recorded from another file, or the file "
                "changed since)"
            )
        answers[index] = rec["answer"]
    return answers
