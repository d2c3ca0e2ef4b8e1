"""Readers: every file type, its row numbering, and errors that name file, line and field."""

from __future__ import annotations

import json

import pytest

from tunesmith.data.readers import iter_rows
from tunesmith.errors import DataError


def rows(path):
    return list(iter_rows(path))


def error(path) -> DataError:
    with pytest.raises(DataError) as caught:
        rows(path)
    return caught.value


# ---- JSON Lines ---------------------------------------------------------------------------


def test_jsonl_numbers_physical_lines_and_skips_blank_ones(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"a": 2}\r\n{"a": 3}')  # CRLF and no final newline
    assert rows(path) == [(1, {"a": 1}), (4, {"a": 2}), (5, {"a": 3})]


def test_ndjson_suffix_and_utf8_bom_are_accepted(tmp_path):
    path = tmp_path / "train.NDJSON"
    path.write_bytes(b'\xef\xbb\xbf{"text": "caf\xc3\xa9"}\n')
    assert rows(path) == [(1, {"text": "café"})]


def test_jsonl_does_not_split_on_unicode_line_separators(tmp_path):
    # U+2028 is legal inside a JSON string; str.splitlines would break the line there.
    path = tmp_path / "train.jsonl"
    path.write_text(
        json.dumps({"text": "a\u2028b"}, ensure_ascii=False) + '\n{"text": "c"}\n', encoding="utf-8"
    )
    assert rows(path) == [(1, {"text": "a\u2028b"}), (2, {"text": "c"})]


def test_malformed_json_line_names_file_line_and_column(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": "a" "b"}\n')
    err = error(path)
    assert err.path == str(path) and err.line == 3
    assert str(err) == f"{path}, line 3: invalid JSON: Expecting ',' delimiter: column 14"


def test_truncated_json_line_says_end_of_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "cut"\n')
    err = error(path)
    assert err.line == 2
    assert str(err).endswith("invalid JSON: Expecting ',' delimiter: at the end of the line")


def test_pretty_printed_json_in_jsonl_gets_a_hint(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{\n  "text": "a"\n}\n')
    err = error(path)
    assert err.line == 1 and "pretty-printed JSON document" in str(err)


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": "b"}\n{"text": "\xff"}\n')
    err = error(path)
    assert err.line == 3
    assert str(err).startswith(f"{path}, line 3: invalid UTF-8 (byte 0xff")


def test_parsed_values_need_not_be_objects(tmp_path):
    # Readers parse; deciding what a row must look like is the format layer's job.
    path = tmp_path / "train.jsonl"
    path.write_text('[1, 2]\n"x"\n')
    assert rows(path) == [(1, [1, 2]), (2, "x")]


# ---- empty / missing / unsupported ----------------------------------------------------------


@pytest.mark.parametrize(
    "name, content",
    [
        ("train.jsonl", ""),
        ("train.jsonl", "\n\n  \n"),
        ("train.json", "[]"),
        ("train.json", "  \n"),
        ("train.csv", "messages,id\n"),
        ("train.txt", "\n \n"),
    ],
)
def test_empty_files_are_an_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    err = error(path)
    assert str(err) == f"{path}: file is empty: expected at least one example"
    assert err.line is None


def test_missing_file_is_an_error_at_call_time(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        iter_rows(path)


def test_directory_is_an_error(tmp_path):
    path = tmp_path / "data.jsonl"
    path.mkdir()
    with pytest.raises(DataError, match="is a directory"):
        iter_rows(path)


def test_unsupported_suffix_lists_the_supported_ones(tmp_path):
    path = tmp_path / "train.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match=r"unsupported file type \(\.xlsx\).*\.jsonl.*\.parquet"):
        iter_rows(path)


# ---- JSON ---------------------------------------------------------------------------------


def test_json_array_numbers_elements_from_one(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps([{"text": "a"}, {"text": "b"}], indent=2))
    assert rows(path) == [(1, {"text": "a"}), (2, {"text": "b"})]


def test_json_object_at_top_level_is_an_error(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('{"data": [{"text": "a"}]}')
    err = error(path)
    assert "expected a top-level JSON array of examples, got an object" in str(err)
    assert ".jsonl" in str(err)


def test_json_parse_error_names_the_text_line(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('[\n  {"text": "a"},\n  {"text": "b",}\n]\n')
    err = error(path)
    assert err.line == 3 and "invalid JSON: " in str(err) and "column" in str(err)


def test_json_invalid_utf8_names_the_text_line(tmp_path):
    path = tmp_path / "train.json"
    path.write_bytes(b'[\n{"text": "a"},\n{"text": "\xc3("}\n]')
    assert error(path).line == 3


# ---- CSV ----------------------------------------------------------------------------------


def test_csv_rows_count_from_one_after_the_header(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('instruction,input,output\nsay hi,,hi\n\n"multi\nline",x,"y"\nlast,,z\n')
    assert rows(path) == [
        (1, {"instruction": "say hi", "input": "", "output": "hi"}),
        (3, {"instruction": "multi\nline", "input": "x", "output": "y"}),
        (4, {"instruction": "last", "input": "", "output": "z"}),
    ]


def test_csv_messages_and_tools_columns_are_parsed_as_json(tmp_path):
    messages = [{"role": "user", "content": 'a, "b"'}, {"role": "assistant", "content": "c"}]
    tools = [{"type": "function", "function": {"name": "f"}}]
    path = tmp_path / "train.csv"
    import csv

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["messages", "tools", "prompt"])
        writer.writerow([json.dumps(messages), json.dumps(tools), "[not parsed]"])
    assert rows(path) == [(1, {"messages": messages, "tools": tools, "prompt": "[not parsed]"})]


def test_csv_bad_json_cell_names_row_and_column(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('id,messages\n1,"[{""role"": ""user""}]"\n2,"[{""role"": }]"\n')
    err = error(path)
    assert (err.line, err.field) == (2, "messages")
    assert str(err).startswith(f"{path}, line 2, field 'messages': cell is not valid JSON")


def test_csv_row_with_wrong_cell_count(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,id\na,1\nb,2,extra\n")
    err = error(path)
    assert err.line == 2 and "row has 3 cells but the header has 2 columns" in str(err)


def test_csv_duplicate_header(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,text\na,b\n")
    assert "repeats column 'text'" in str(error(path))


def test_csv_invalid_utf8_names_the_physical_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"text\nok\nbad \xfe here\n")
    assert error(path).line == 3


# ---- Parquet / text -----------------------------------------------------------------------


def test_parquet_roundtrip(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    records = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "id": 1},
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "id": 2},
    ]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(records), path)
    assert rows(path) == [(1, records[0]), (2, records[1])]


def test_parquet_with_zero_rows_is_empty(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), path)
    assert "file is empty" in str(error(path))


def test_corrupt_parquet_is_a_data_error(tmp_path):
    pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "train.parquet"
    path.write_bytes(b"this is not parquet")
    assert "cannot read Parquet data" in str(error(path))


def test_parquet_without_pyarrow_says_how_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    path = tmp_path / "train.parquet"
    path.write_bytes(b"PAR1")
    assert "pip install 'tunesmith[parquet]'" in str(error(path))


def test_txt_file_is_one_text_document(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("First paragraph.\n\n\nSecond paragraph.\n")
    assert rows(path) == [(1, {"text": "First paragraph.\n\n\nSecond paragraph.\n"})]


@pytest.mark.parametrize(
    "line, says",
    [
        ("[" * 5000 + "]" * 5000, "nested more than 100 levels deep"),
        ('{"text": ' + "7" * 5001 + "}", "Exceeds the limit (4300 digits)"),
    ],
)
def test_pathological_json_line_is_a_data_error_naming_the_line(tmp_path, line, says):
    # RecursionError / the integer digit limit used to escape as a traceback (issue 16).
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "ok"}\n' + line + "\n")
    err = error(path)
    assert err.path == str(path) and err.line == 2 and says in str(err)
