"""``tunesmith data split``: a deterministic, duplicate-aware train/eval split of a JSONL file.

Rows are grouped by the near-duplicate key of :mod:`tunesmith.data.tools.dedup` (exact duplicates share
it too), and whole groups are assigned to one side, so no example has a copy on the other side
of the split. Lines are copied verbatim (bytes), in their original order.

Two passes over the file, memory per row: pass 1 keys every line (one 64-bit int), pass 2 copies.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from ... import jsontext
from ...errors import DataError
from .dedup import near_key, raw_line_key


@dataclass(frozen=True)
class SplitResult:
    """Where the split went and how many lines (and duplicate groups) each side got."""

    train_path: Path
    eval_path: Path
    n_train: int
    n_eval: int
    n_groups: int


def _line_keys(path: Path) -> list[int]:
    """One group key per non-blank line (unparseable lines are keyed by their bytes)."""
    keys = []
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.strip():
                continue
            try:
                keys.append(near_key(jsontext.loads(raw)))
            except ValueError:  # invalid JSON or UTF-8: still copied, grouped by its bytes
                keys.append(raw_line_key(raw))
    return keys


def _eval_groups(keys: list[int], fraction: float, seed: int) -> set[int]:
    """Group keys for the eval side: groups in a seeded order until ``fraction`` of lines.

    A group that would overshoot the target is skipped (a smaller one may still fit), so the
    eval side never exceeds ``round(fraction * n)`` lines (at least 1 when n > 1).
    """
    sizes: dict[int, int] = {}
    for key in keys:
        sizes[key] = sizes.get(key, 0) + 1
    target = round(fraction * len(keys))
    if target == 0 and len(keys) > 1:
        target = 1
    order = sorted(sizes)  # dict order would do, but sorting makes the seed the only input
    random.Random(seed).shuffle(order)
    chosen, taken = set(), 0
    for key in order:
        if taken >= target:
            break
        if taken + sizes[key] <= target:
            chosen.add(key)
            taken += sizes[key]
    return chosen


def split_file(
    path: str | PathLike[str],
    *,
    eval_fraction: float = 0.1,
    seed: int = 0,
    out_dir: str | PathLike[str] | None = None,
) -> SplitResult:
    """Write ``train.jsonl`` and ``eval.jsonl`` under ``out_dir`` (default ``<stem>_split``
    beside the input). Deterministic in (file content, ``eval_fraction``, ``seed``).

    Raises :class:`DataError` for a missing or non-JSONL input, a fraction outside (0, 1), or an
    output path that is the input file (the input is never overwritten).
    """
    source = Path(path)
    if not source.is_file():
        raise DataError("file not found", path=str(source))
    if source.suffix.lower() not in (".jsonl", ".ndjson"):
        raise DataError("data split copies lines verbatim and needs a .jsonl file", path=str(source))
    if not 0 < eval_fraction < 1:
        raise DataError(f"--eval-fraction must be between 0 and 1, got {eval_fraction}")
    folder = Path(out_dir) if out_dir is not None else source.with_name(f"{source.stem}_split")
    train_path, eval_path = folder / "train.jsonl", folder / "eval.jsonl"
    for target in (train_path, eval_path):
        if target.resolve() == source.resolve():
            raise DataError(
                f"the output {target} would overwrite the input file; choose another --out-dir",
                path=str(source),
            )
    keys = _line_keys(source)
    chosen = _eval_groups(keys, eval_fraction, seed)
    folder.mkdir(parents=True, exist_ok=True)
    n_train, n_eval = _write(source, keys, chosen, train_path, eval_path)
    return SplitResult(train_path, eval_path, n_train, n_eval, len(set(keys)))


def _write(
    source: Path, keys: list[int], chosen: set[int], train_path: Path, eval_path: Path
) -> tuple[int, int]:
    # Written to temporary names and renamed, so an interrupted split leaves no half file.
    tmp_train, tmp_eval = train_path.with_suffix(".jsonl.tmp"), eval_path.with_suffix(".jsonl.tmp")
    counts = [0, 0]
    with source.open("rb") as handle, tmp_train.open("wb") as train, tmp_eval.open("wb") as held:
        lines = (raw for raw in handle if raw.strip())
        for key, raw in zip(keys, lines):
            side = 1 if key in chosen else 0
            (held if side else train).write(raw if raw.endswith(b"\n") else raw + b"\n")
            counts[side] += 1
    os.replace(tmp_train, train_path)
    os.replace(tmp_eval, eval_path)
    return counts[0], counts[1]
