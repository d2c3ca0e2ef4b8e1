"""Read training data files into raw rows, with errors that name the file and the line.

:func:`iter_rows` is the one entry point. It knows file *encodings* (JSON Lines, JSON, CSV,
Parquet, plain text) but nothing about example *formats*; that is :mod:`tunesmith.data.formats`.

Row numbers are 1-based and mean, per file type:

- ``.jsonl`` / ``.ndjson``: the physical line number (blank lines are skipped but counted, so the
  number is what an editor shows);
- ``.json``: the element's 1-based index in the top-level array (a parse error instead names
  the text line where the parser stopped);
- ``.csv``: the data row, counting the first row *after the header* as 1 (blank rows are skipped
  but counted; a cell with embedded newlines does not shift the count);
- ``.parquet``: the 1-based row index;
- ``.txt``: always 1 — the whole file is one ``{"text": ...}`` document for continued pretraining;
- a folder written by Hugging Face ``datasets``' ``save_to_disk``: the 1-based row index (read
  with ``datasets.load_from_disk``: Arrow files, memory-mapped, no network).

A source given as a :class:`~tunesmith.config.schema.DataSource` may rename fields
(``columns``, applied here to every row, so every reader of data sees the renamed rows) and
pick the split of a saved ``DatasetDict`` (``split``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from os import PathLike
from pathlib import Path
from typing import Any

from tunesmith import jsontext
from tunesmith.config.schema import DataSource
from tunesmith.errors import DataError

Row = tuple[int, Any]

# CSV can only hold strings; these columns only make sense as JSON lists/objects, so a cell
# that looks like one is parsed. Other columns (prompt, input, ...) stay strings: a prompt that
# happens to start with "[" must not be silently turned into a list.
CSV_JSON_COLUMNS = frozenset({"messages", "conversations", "tools"})


def iter_rows(path: str | PathLike[str] | DataSource) -> Iterator[Row]:
    """Yield ``(number, parsed_object)`` for every example in ``path`` (see module docstring):
    a file, a ``save_to_disk`` folder, or a :class:`DataSource` naming one of them with its
    ``columns`` renames and ``split``.

    Raises :class:`DataError` at call time for a missing file, a folder that is not a saved
    dataset (or a DatasetDict without a ``split`` chosen), an unsupported suffix or an empty
    (zero-byte) file; while iterating for undecodable bytes (naming the line), invalid JSON
    (naming line and column), malformed CSV rows, unreadable Parquet, a row without a column
    that ``columns`` maps (naming line and column), and a file with no example in it (only
    blank lines, ``[]``, a header without rows, zero rows). Parsed objects are returned as
    found: checking they are JSON objects is the caller's job.
    """
    source = path if isinstance(path, DataSource) else DataSource(path=str(path))
    file = Path(source.path)
    if file.is_dir():
        rows = _read_saved_dataset(file, source.split)
    elif not file.suffix and not file.exists():
        raise DataError("no such file or folder", path=str(file))
    else:
        read = _reader_for(file)
        _check_file(file)
        if source.split is not None:
            raise DataError(
                f"'split: {source.split}' chooses a split of a folder saved by datasets' "
                "save_to_disk; this is a file",
                path=str(file),
            )
        rows = _nonempty(file, read(file))
    return _renamed(file, rows, source.columns) if source.columns else rows


SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet", ".txt")


def _reader_for(file: Path) -> Callable[[Path], Iterator[Row]]:
    readers: dict[str, Callable[[Path], Iterator[Row]]] = {
        ".jsonl": _read_jsonl,
        ".ndjson": _read_jsonl,
        ".json": _read_json,
        ".csv": _read_csv,
        ".parquet": _read_parquet,
        ".txt": _read_txt,
    }
    read = readers.get(file.suffix.lower())
    if read is None:
        shown = file.suffix or "no suffix"
        raise DataError(
            f"unsupported file type ({shown}); expected one of " + ", ".join(SUFFIXES), path=str(file)
        )
    return read


def _check_file(file: Path) -> None:
    if not file.exists():
        raise DataError("file not found", path=str(file))
    if file.stat().st_size == 0:
        raise _empty(file)


def _empty(file: Path) -> DataError:
    return DataError("file is empty: expected at least one example", path=str(file))


def _nonempty(file: Path, rows: Iterator[Row]) -> Iterator[Row]:
    """Pass ``rows`` through; raise the 'is empty' error if there were none."""
    seen = False
    for row in rows:
        seen = True
        yield row
    if not seen:
        raise _empty(file)


# ---- text decoding -----------------------------------------------------------------------


def _decode_line(raw: bytes, file: Path, number: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"invalid UTF-8 (byte 0x{raw[err.start]:02x} at byte {err.start + 1} "
            "of the line); data files must be UTF-8 encoded",
            path=str(file),
            line=number,
        ) from None
    # A byte-order mark is legal at the start of a UTF-8 file but is not JSON.
    return text.removeprefix("\ufeff") if number == 1 else text


def _decode_file(file: Path) -> str:
    """Whole-file UTF-8 decode; a bad byte is reported with its physical line number."""
    data = file.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"invalid UTF-8 (byte 0x{data[err.start]:02x}); data files must be UTF-8 encoded",
            path=str(file),
            line=line,
        ) from None


# ---- JSON Lines / JSON -------------------------------------------------------------------


def _read_jsonl(file: Path) -> Iterator[Row]:
    # Binary iteration splits on b"\n" only; str.splitlines would also split on U+2028 etc.,
    # which are legal inside JSON strings, and shift the line numbers.
    with file.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            text = _decode_line(raw, file, number).rstrip("\r\n")
            if not text.strip():
                continue
            try:
                yield number, jsontext.loads(text)
            except json.JSONDecodeError as err:
                where = "at the end of the line" if err.pos >= len(text) else f"column {err.colno}"
                raise DataError(
                    f"invalid JSON: {err.msg}: {where}" + _pretty_json_hint(text, number),
                    path=str(file),
                    line=number,
                ) from None


def _pretty_json_hint(text: str, number: int) -> str:
    """A hint for the commonest mistake: a pretty-printed JSON document in a .jsonl file."""
    if number == 1 and text.strip() in ("[", "{"):
        return (
            " (this looks like a pretty-printed JSON document: JSON Lines needs one "
            "complete object per line; or name the file .json if it holds one array)"
        )
    return ""


def _read_json(file: Path) -> Iterator[Row]:
    text = _decode_file(file)
    if not text.strip():
        return
    try:
        document = jsontext.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"invalid JSON: {err.msg}: column {err.colno}", path=str(file), line=err.lineno
        ) from None
    if not isinstance(document, list):
        kind = "an object" if isinstance(document, dict) else type(document).__name__
        raise DataError(
            f"expected a top-level JSON array of examples, got {kind}; for one "
            "object per line use a .jsonl file",
            path=str(file),
        )
    yield from enumerate(document, start=1)


# ---- CSV ---------------------------------------------------------------------------------


def _read_csv(file: Path) -> Iterator[Row]:
    reader = csv.reader(io.StringIO(_decode_file(file), newline=""))
    try:
        header = _csv_header(file, reader)
        if header is None:
            return
        number = 0
        for cells in reader:
            number += 1
            if not cells or cells == [""]:
                continue
            yield number, _csv_row(file, number, header, cells)
    except csv.Error as err:
        # The csv module reports the physical line it stopped on, not the data row.
        raise DataError(
            f"malformed CSV near physical line {reader.line_num}: {err}", path=str(file)
        ) from None


def _csv_header(file: Path, reader: Any) -> list[str] | None:
    for cells in reader:
        if not cells or cells == [""]:
            continue
        duplicates = sorted({name for name in cells if cells.count(name) > 1})
        if duplicates:
            raise DataError(f"CSV header repeats column '{duplicates[0]}'", path=str(file))
        return cells
    return None


def _csv_row(file: Path, number: int, header: list[str], cells: list[str]) -> dict[str, Any]:
    if len(cells) != len(header):
        raise DataError(
            f"row has {len(cells)} cells but the header has {len(header)} "
            "columns (CSV data rows count from 1 after the header)",
            path=str(file),
            line=number,
        )
    row: dict[str, Any] = dict(zip(header, cells))
    for column in CSV_JSON_COLUMNS.intersection(row):
        row[column] = _csv_json_cell(file, number, column, row[column])
    return row


def _csv_json_cell(file: Path, number: int, column: str, cell: str) -> Any:
    if not cell.lstrip().startswith(("[", "{")):
        return cell  # left as a string; the format check says what was expected
    try:
        return jsontext.loads(cell)
    except json.JSONDecodeError as err:
        raise DataError(
            f"cell is not valid JSON (column {err.colno} of the cell: {err.msg})",
            path=str(file),
            line=number,
            field=column,
        ) from None


# ---- Parquet / plain text ----------------------------------------------------------------


def _read_parquet(file: Path) -> Iterator[Row]:
    try:  # imported lazily: pyarrow is an optional dependency (extra "parquet")
        import pyarrow
        import pyarrow.parquet as parquet
    except ImportError:
        raise DataError(
            "reading .parquet files needs pyarrow: pip install 'tunesmith[parquet]'", path=str(file)
        ) from None
    number = 0
    try:
        for batch in parquet.ParquetFile(file).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                number += 1
                yield number, row
    except (pyarrow.ArrowException, OSError) as err:
        raise DataError(f"cannot read Parquet data after row {number}: {err}", path=str(file)) from None


def _read_txt(file: Path) -> Iterator[Row]:
    text = _decode_file(file)
    if text.strip():
        yield 1, {"text": text}


# ---- Hugging Face datasets folders (save_to_disk) -----------------------------------------

_NOT_SAVED = (
    "this is a directory; expected a data file, or a folder written by datasets' "
    "save_to_disk (with dataset_info.json and state.json, or dataset_dict.json)"
)


def is_saved_dataset(folder: Path) -> bool:
    """Whether ``folder`` looks like ``save_to_disk``'s output (a Dataset or a DatasetDict)."""
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "dataset_info.json").is_file() and (folder / "state.json").is_file()
    )


def _read_saved_dataset(folder: Path, split: str | None) -> Iterator[Row]:
    """The rows of a ``Dataset`` (or one split of a ``DatasetDict``) saved with ``save_to_disk``.

    The folder's layout is checked before ``datasets`` is imported, so a stray directory is a
    plain error even where the package is missing."""
    if not is_saved_dataset(folder):
        raise DataError(_NOT_SAVED, path=str(folder))
    try:  # imported lazily: datasets is an optional dependency (extra "datasets")
        import datasets
    except ImportError:
        raise DataError(
            "reading a folder saved with save_to_disk needs the datasets package: "
            "pip install 'tunesmith[datasets]'",
            path=str(folder),
        ) from None
    try:
        saved = datasets.load_from_disk(str(folder))
    except Exception as err:  # datasets raises FileNotFoundError, ValueError, pyarrow errors ...
        raise DataError(f"cannot read this save_to_disk folder: {_one_line(err)}", path=str(folder)) from None
    if isinstance(saved, datasets.DatasetDict):
        saved = _pick_split(folder, saved, split)
    elif split is not None:
        raise DataError(
            f"'split: {split}' given, but this folder holds a single Dataset (no splits)", path=str(folder)
        )
    if len(saved) == 0:
        raise _empty(folder)
    return _dataset_rows(saved)


def _pick_split(folder: Path, saved: Any, split: str | None) -> Any:
    names = list(saved)
    if split is None and len(names) == 1:
        return saved[names[0]]
    if split is None:
        raise DataError(
            f"this folder holds a DatasetDict with splits {', '.join(names)}; choose one with "
            f"{{path: {folder}, split: {names[0]}}} (or point at {folder / names[0]})",
            path=str(folder),
        )
    if split not in saved:
        raise DataError(
            f"no split '{split}' in this DatasetDict; its splits: {', '.join(names)}", path=str(folder)
        )
    return saved[split]


def _dataset_rows(saved: Any) -> Iterator[Row]:
    number = 0
    for batch in saved.iter(batch_size=1024):  # a dict of columns, as Python lists
        names = list(batch)
        for values in zip(*(batch[name] for name in names)):
            number += 1
            yield number, dict(zip(names, values))


def _one_line(err: Exception) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:300] + "…"


# ---- column renames ----------------------------------------------------------------------


def _renamed(file: Path, rows: Iterator[Row], columns: dict[str, str]) -> Iterator[Row]:
    """Rows with ``columns`` applied: field ``target`` takes the value of column ``columns[target]``
    (which is dropped under its own name); other fields pass through. A row without a mapped
    column is an error naming the line and the column."""
    sourced = set(columns.values())
    for number, row in rows:
        if isinstance(row, dict):  # anything else is the format check's to report
            for target, column in columns.items():
                if column not in row:
                    have = ", ".join(sorted(map(str, row))) or "none"
                    raise DataError(
                        f"no column '{column}' (the source's 'columns' maps it to '{target}'); "
                        f"this row's columns: {have}",
                        path=str(file),
                        line=number,
                        field=column,
                    )
            renamed = {k: v for k, v in row.items() if k not in sourced}
            renamed.update({target: row[column] for target, column in columns.items()})
            row = renamed
        yield number, row
