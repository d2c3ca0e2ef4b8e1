"""Exact and near-duplicate detection for data files, in memory proportional to the row count.

Two keys per row, both 64-bit integers (a Python int per row, never the row itself):

- the **exact** key hashes the row's canonical JSON (keys sorted), so rows that differ only in key
  order or whitespace between tokens are exact duplicates;
- the **near** key hashes the row's *normalised text*: every string value (keys sorted, depth
  first) joined with newlines, lowercased, punctuation stripped, whitespace runs collapsed.

Equal exact keys imply equal near keys, so exact groups nest inside near groups: that is what
lets :class:`DuplicateIndex` keep one dict entry per row. ``tunesmith data split`` uses the same
near key, so a duplicate group reported by ``check`` never straddles a split.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

# \w is Unicode-aware: letters and digits of every script survive; everything else that is not
# whitespace counts as punctuation (including symbols and emoji).
_PUNCTUATION = re.compile(r"[^\w\s]|_")


def normalise_text(text: str) -> str:
    """Lowercase (casefold), strip punctuation, collapse whitespace runs to one space."""
    return " ".join(_PUNCTUATION.sub(" ", text.casefold()).split())


def row_text(row: Any) -> str:
    """Every string value of a parsed row (dict keys sorted, depth first), one per line."""
    parts: list[str] = []
    _collect_strings(row, parts)
    return "\n".join(parts)


def _collect_strings(value: Any, parts: list[str]) -> None:
    if isinstance(value, str):
        parts.append(value)
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            _collect_strings(value[key], parts)
    elif isinstance(value, list):
        for item in value:
            _collect_strings(item, parts)


def _hash64(text: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little"
    )


def exact_key(row: Any) -> int:
    """64-bit hash of the row's canonical JSON."""
    return _hash64(json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":")))


def near_key(row: Any) -> int:
    """64-bit hash of :func:`normalise_text` of :func:`row_text` — the grouping key."""
    return _hash64(normalise_text(row_text(row)))


def raw_line_key(raw: bytes) -> int:
    """Key for a line that does not parse: its bytes, trailing whitespace removed."""
    return int.from_bytes(hashlib.blake2b(raw.rstrip(), digest_size=8).digest(), "little")


@dataclass
class DuplicateIndex:
    """Collects rows' keys; reports groups of duplicate line numbers.

    Memory: one dict entry per distinct near key (its first line and exact key), plus member
    lists only for keys seen more than once.
    """

    _first: dict[int, tuple[int, int]] = field(default_factory=dict)
    _more: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    def add(self, line: int, row: Any) -> None:
        """Record ``row`` (a parsed JSON value) found at 1-based ``line``."""
        near, exact = near_key(row), exact_key(row)
        first = self._first.get(near)
        if first is None:
            self._first[near] = (line, exact)
        else:
            self._more.setdefault(near, [first]).append((line, exact))

    def first_line_of(self, row: Any) -> int | None:
        """Line of the first recorded row near-equal to ``row``, or None."""
        first = self._first.get(near_key(row))
        return first[0] if first else None

    def groups(self) -> list[dict[str, Any]]:
        """Duplicate groups, ordered by first line.

        Each is ``{"kind": "exact" | "near", "lines": [...]}``: an exact group holds rows with
        identical content; a near group holds rows whose normalised text is equal but which are
        not all identical (its exact subgroups are reported too).
        """
        out: list[dict[str, Any]] = []
        for members in self._more.values():
            by_exact: dict[int, list[int]] = {}
            for line, exact in members:
                by_exact.setdefault(exact, []).append(line)
            if len(by_exact) > 1:
                out.append({"kind": "near", "lines": [line for line, _ in members]})
            out.extend({"kind": "exact", "lines": lines} for lines in by_exact.values() if len(lines) > 1)
        out.sort(key=lambda group: (group["lines"][0], group["kind"] != "near"))
        return out
