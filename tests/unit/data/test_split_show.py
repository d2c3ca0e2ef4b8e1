"""`tunesmith data split` (deterministic, duplicate-aware) and `data show` (trained spans)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tunesmith.cli.data import add_data_commands
from tunesmith.data.tools.dedup import near_key
from tunesmith.data.tools.show import TRAINED_ANSI, show_examples
from tunesmith.data.tools.split import split_file
from tunesmith.errors import DataError


def rows_with_duplicates(n: int = 60) -> list[str]:
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"question {i}"},
                    {"role": "assistant", "content": f"answer {i}"},
                ]
            }
        )
        for i in range(n)
    ]
    for i in range(0, n, 6):  # every sixth example also appears as a near duplicate
        lines.append(lines[i].replace("question", "QUESTION").replace('"}', '?!"}', 1))
    lines.append(lines[3])  # and one exact duplicate
    return lines


@pytest.fixture
def data_file(tmp_path) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(rows_with_duplicates()) + "\n")
    return path


def test_split_is_deterministic_verbatim_and_duplicate_aware(data_file, tmp_path):
    first = split_file(data_file, eval_fraction=0.2, seed=3, out_dir=tmp_path / "a")
    again = split_file(data_file, eval_fraction=0.2, seed=3, out_dir=tmp_path / "b")
    assert first.train_path.read_bytes() == again.train_path.read_bytes()
    assert first.eval_path.read_bytes() == again.eval_path.read_bytes()
    train = first.train_path.read_text().splitlines()
    held = first.eval_path.read_text().splitlines()
    source = data_file.read_text().splitlines()
    assert sorted(train + held) == sorted(source)  # every line once, byte for byte
    assert (first.n_train, first.n_eval) == (len(train), len(held))
    assert 0 < len(held) <= round(0.2 * len(source))
    keys = lambda lines: {near_key(json.loads(line)) for line in lines}  # noqa: E731
    assert not keys(train) & keys(held)  # no duplicate group straddles the split
    assert first.n_groups == 60
    other = split_file(data_file, eval_fraction=0.2, seed=4, out_dir=tmp_path / "c")
    assert other.eval_path.read_text() != first.eval_path.read_text()


def test_split_keeps_original_order(data_file, tmp_path):
    result = split_file(data_file, eval_fraction=0.3, out_dir=tmp_path / "out")
    source = data_file.read_text().splitlines()
    train = result.train_path.read_text().splitlines()
    positions = [source.index(line) for line in train]
    assert positions == sorted(positions)


def test_split_never_overwrites_its_input(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(rows_with_duplicates(20)) + "\n")
    before = path.read_bytes()
    with pytest.raises(DataError, match="overwrite the input"):
        split_file(path, out_dir=tmp_path)
    assert path.read_bytes() == before
    result = split_file(path)  # default: a folder beside the input
    assert result.train_path.parent == tmp_path / "train_split"
    assert path.read_bytes() == before


@pytest.mark.parametrize("fraction", [0, 1, 1.5])
def test_split_rejects_bad_fractions(data_file, fraction):
    with pytest.raises(DataError, match="between 0 and 1"):
        split_file(data_file, eval_fraction=fraction)


def test_show_brackets_exactly_the_trained_turns(tmp_path, tiny_tokenizer):
    path = tmp_path / "t.jsonl"
    rows = [
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello there"},
                {"role": "assistant", "content": "hi", "weight": 0},
                {"role": "user", "content": "what color is the sky"},
                {"role": "assistant", "content": "blue"},
            ]
        }
    ]
    path.write_text(json.dumps(rows[0]) + "\n")
    text = show_examples(path, tiny_tokenizer, n=3)
    assert text.startswith("── line 1: ")
    assert text.count("[[") == 1
    assert "[[blue<|im_end|>]]" in text  # the end-of-turn token is trained too
    assert "<|im_start|>assistant\nhi<|im_end|>" in text  # weight 0: shown, not trained
    colored = show_examples(path, tiny_tokenizer, n=1, color=True)
    assert f"{TRAINED_ANSI}blue<|im_end|>" in colored and "[[" not in colored


def test_show_cli_limits_examples(tmp_path, tiny_tokenizer_dir, capsys, data_file):
    parser = argparse.ArgumentParser(prog="tunesmith")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "show", str(data_file), "--model", str(tiny_tokenizer_dir), "-n", "2"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.count("── line ") == 2 and "[[answer 0<|im_end|>]]" in out
