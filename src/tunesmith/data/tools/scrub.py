"""Redact personal and secret data from training files (``tunesmith data scrub``).

Each finding is replaced by a typed placeholder ``<EMAIL>``, ``<PHONE>``, ``<CREDIT_CARD>``,
``<IBAN>``, ``<SSN>``, ``<IP_ADDRESS>`` or ``<SECRET>``. What counts as each type, and why
ambiguous digit runs are left alone, is documented in :mod:`tunesmith.data.tools.pii_patterns`.

:func:`scrub_file` walks every string value of every row (message contents, tool-call
arguments, any nested string), keeps the JSON structure and key order, and writes one
output row per input row. Its report names where things were found (row number, field path,
type, span length) but never the found text, not even partially masked, so the report
can be shared. Object *keys* are left unchanged in the output (they are schema, not
content); in report field paths they are scrubbed like values so a key can't leak either.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from typing import Any

from tunesmith.data.readers import iter_rows
from tunesmith.data.tools.pii_patterns import TYPES, find_spans
from tunesmith.errors import TunesmithError
from tunesmith.files import write_atomically

PLACEHOLDERS = {kind: f"<{kind}>" for kind in TYPES}


@dataclass(frozen=True)
class Finding:
    """One redacted span: ``kind`` (a key of :data:`PLACEHOLDERS`), its ``start`` offset and
    ``length`` in the original string, and the ``field`` path of that string in its row
    (``messages[2].content``; "" for a bare string). Holds no text of the finding."""

    kind: str
    start: int
    length: int
    field: str = ""

    def as_report(self, line: int) -> dict[str, Any]:
        return {"line": line, "field": self.field, "type": self.kind, "length": self.length}


def scrub_text(text: str) -> tuple[str, list[Finding]]:
    """Return ``text`` with every finding replaced by its placeholder, and the findings
    (offsets into the original ``text``, in order). Text without findings is returned as is.
    """
    spans = find_spans(text)
    if not spans:
        return text, []
    pieces, position = [], 0
    for span in spans:
        pieces += [text[position : span.start], PLACEHOLDERS[span.kind]]
        position = span.end
    pieces.append(text[position:])
    return "".join(pieces), [Finding(s.kind, s.start, s.end - s.start) for s in spans]


def scrub_value(obj: Any, path: str = "") -> tuple[Any, list[Finding]]:
    """Scrub every string inside a JSON value; return a new value and the findings.

    Dicts keep their keys and key order, lists their length; numbers, booleans and null are
    kept, except an integer whose digits are wholly one finding (a card number stored as a
    JSON number), which becomes the placeholder string. ``path`` is the value's field path;
    findings get paths like ``messages[2].content`` or ``tool_calls[0].function.arguments``.
    """
    if isinstance(obj, str):
        clean, findings = scrub_text(obj)
        return clean, [replace(f, field=path) for f in findings]
    if isinstance(obj, dict):
        return _scrub_dict(obj, path)
    if isinstance(obj, list):
        return _scrub_list(obj, path)
    if isinstance(obj, int) and not isinstance(obj, bool):
        return _scrub_int(obj, path)
    return obj, []


def _scrub_dict(obj: dict[str, Any], path: str) -> tuple[dict[str, Any], list[Finding]]:
    out, findings = {}, []
    for key, value in obj.items():
        out[key], found = scrub_value(value, _child_path(path, key))
        findings += found
    return out, findings


def _scrub_list(obj: list[Any], path: str) -> tuple[list[Any], list[Finding]]:
    out, findings = [], []
    for index, value in enumerate(obj):
        clean, found = scrub_value(value, f"{path}[{index}]")
        out.append(clean)
        findings += found
    return out, findings


def _scrub_int(value: int, path: str) -> tuple[Any, list[Finding]]:
    digits = str(value)
    _, findings = scrub_text(digits)
    if len(findings) == 1 and findings[0].length == len(digits):
        return PLACEHOLDERS[findings[0].kind], [replace(findings[0], field=path)]
    return value, []  # a partial match inside a number is not a finding (it's a number)


def _child_path(path: str, key: Any) -> str:
    # The key is scrubbed for the path only, so the report never repeats a secret.
    shown = scrub_text(str(key))[0]
    return f"{path}.{shown}" if path else shown


# ---- files --------------------------------------------------------------------------------


def scrub_file(
    in_path: str | PathLike[str],
    out_path: str | PathLike[str],
    report_path: str | PathLike[str] | None = None,
) -> dict[str, Any]:
    """Scrub every row of ``in_path`` into JSON Lines at ``out_path``; return the report.

    ``in_path`` is any file :func:`~tunesmith.data.readers.iter_rows` reads (JSONL, JSON,
    CSV, Parquet, text); rows need not be in a known training format. The output is written
    to a temporary file beside ``out_path`` and renamed into place only when complete, so a
    failure never leaves half a file (nor clobbers an existing one). With ``report_path``
    the report is also written there as JSON. The report::

        {"input": str, "output": str, "rows": int, "rows_with_findings": int,
         "total": int, "by_type": {"EMAIL": int, ...},     # only types found
         "by_line": {"3": int, ...},                       # row number -> findings
         "findings": [{"line": 3, "field": "messages[2].content",
                       "type": "EMAIL", "length": 17}, ...]}

    Raises :class:`DataError` for unreadable input (see ``iter_rows``) and
    :class:`TunesmithError` if ``out_path`` or ``report_path`` is the input file (after
    resolving symlinks and relative paths) or the two outputs are the same file.
    """
    check_output_paths(in_path, out_path, report_path)
    rows = iter_rows(in_path)  # raises now for a missing / empty / unsupported file
    findings: list[dict[str, Any]] = []
    count = 0

    def clean_lines() -> Iterator[str]:
        nonlocal count
        for line, row in rows:
            clean, found = scrub_value(row)
            findings.extend(f.as_report(line) for f in found)
            count += 1
            yield json.dumps(clean, ensure_ascii=False) + "\n"

    write_atomically(out_path, clean_lines())
    report = _report(in_path, out_path, count, findings)
    if report_path is not None:
        write_atomically(report_path, [json.dumps(report, indent=2) + "\n"])
    return report


def _report(in_path: Any, out_path: Any, rows: int, findings: list[dict[str, Any]]) -> dict[str, Any]:
    by_type = Counter(f["type"] for f in findings)
    by_line = Counter(f["line"] for f in findings)
    return {
        "input": str(in_path),
        "output": str(out_path),
        "rows": rows,
        "rows_with_findings": len(by_line),
        "total": len(findings),
        "by_type": {kind: by_type[kind] for kind in TYPES if by_type[kind]},
        "by_line": {str(line): n for line, n in sorted(by_line.items())},
        "findings": findings,
    }


def check_output_paths(in_path: str | PathLike[str], *outputs: str | PathLike[str] | None) -> None:
    """Refuse outputs that would overwrite the input or each other.

    Paths are compared after resolving symlinks and ``..``; existing files are also
    compared with :func:`os.path.samefile` to catch hard links. ``None`` outputs are skipped.
    """
    seen = [Path(in_path)]
    for output in (Path(o) for o in outputs if o is not None):
        for earlier in seen:
            if _same_file(earlier, output):
                what = "the input file" if earlier == seen[0] else f"another output ({earlier})"
                raise TunesmithError(
                    f"output {output} is {what}; refusing to overwrite it, choose a different output path"
                )
        if output.is_dir():
            raise TunesmithError(f"output {output} is a directory; expected a file path")
        seen.append(output)


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return False


__all__ = [
    "Finding",
    "PLACEHOLDERS",
    "scrub_text",
    "scrub_value",
    "scrub_file",
    "check_output_paths",
]
