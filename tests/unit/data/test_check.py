"""`tunesmith data check`: the bad-data corpus, counts, token statistics, duplicates, streaming."""

from __future__ import annotations

import argparse
import json
import tracemalloc
from pathlib import Path

import factory
import pytest

from tunesmith.cli.data import add_data_commands
from tunesmith.data.formats import load_examples
from tunesmith.data.render import Renderer
from tunesmith.data.tools.check import check_file
from tunesmith.data.tools.check_report import CODES, WARNING_CODES
from tunesmith.data.tools.estimate import count_params, estimate_training

BAD = Path(__file__).parents[2] / "assets" / "bad_data"
EXPECTED = json.loads((BAD / "EXPECTED.json").read_text())


def chats(n: int, start: int = 0) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"question {i}"},
                {"role": "assistant", "content": f"answer {i}"},
            ]
        }
        for i in range(start, start + n)
    ]


def write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_corpus_has_30_distinct_defects():
    assert len(EXPECTED) >= 30
    assert {spec["code"] for spec in EXPECTED.values()} <= set(CODES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_file_reports_exactly_its_defect(name, tiny_tokenizer):
    spec = EXPECTED[name]
    report = check_file(BAD / name, tokenizer=tiny_tokenizer, method=spec["method"])
    assert not report.ok
    assert set(report.error_counts) == {spec["code"]}, report.errors
    places = {(e["line"], e["message_index"]) for e in report.errors}
    assert places == {(spec["line"], spec["message_index"])}
    assert all(e["param"] == "training_file" for e in report.errors)


def test_nine_examples_fail_ten_pass(tmp_path):
    nine = check_file(write(tmp_path / "nine.jsonl", chats(9)))
    assert nine.errors == [
        {
            "code": "invalid_n_examples",
            "line": None,
            "message_index": None,
            "param": "training_file",
            "message": "Training file has 9 example(s), but must have at least 10 examples",
        }
    ]
    assert nine.job_error() == {
        "code": "invalid_n_examples",
        "param": "training_file",
        "message": nine.errors[0]["message"],
    }
    ten = check_file(write(tmp_path / "ten.jsonl", chats(10)))
    assert ten.ok and ten.errors == [] and ten.n_examples == 10 and ten.job_error() is None


def test_all_problems_collected_in_one_pass(tmp_path):
    rows = chats(12)
    rows[2] = "{not json"
    rows[6] = {"messages": [{"role": "bot", "content": "x"}, {"role": "user", "content": 3}]}
    rows[9] = {"messages": [{"role": "user", "content": "hi", "weight": 1}]}
    report = check_file(write(tmp_path / "t.jsonl", rows))
    found = sorted((e["line"], e["message_index"] or 0, e["code"]) for e in report.errors)
    assert found == [
        (3, 0, "invalid_json"),
        (7, 0, "example_missing_assistant_message"),
        (7, 1, "unrecognized_role"),
        (7, 2, "invalid_content"),
        (10, 0, "example_missing_assistant_message"),
        (10, 1, "weight_on_non_assistant"),
    ]
    assert report.errors[0]["message"].startswith(
        "Invalid file format. Example 3 cannot be parsed. Error: line contains invalid json: "
    )
    message = next(e["message"] for e in report.errors if e["code"] == "unrecognized_role")
    assert message.startswith("Invalid file format. Example 7, message 1 ")
    job = report.job_error()
    assert job["code"] == "invalid_file_format" and "Example 3" in job["message"]


def test_listing_is_capped_but_counted(tmp_path):
    rows = chats(10) + ["[1]"] * 7
    report = check_file(write(tmp_path / "t.jsonl", rows), max_listed=3)
    assert report.error_counts == {"data_type": 7}
    assert [e["line"] for e in report.errors] == [11, 12, 13]


def test_blank_lines_keep_physical_line_numbers(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in chats(10)) + "\n\n\n[1]\n")
    report = check_file(path)
    assert [(e["code"], e["line"]) for e in report.errors] == [("data_type", 13)]


def test_token_statistics_match_the_renderer(tmp_path, tiny_tokenizer):
    rows = factory.color_chats(30, seed=3)
    rows[4]["messages"][-1]["content"] = " ".join(["the kettle is warm"] * 40)  # long one
    path = write(tmp_path / "t.jsonl", rows)
    rendered = Renderer(tiny_tokenizer, max_length=10**9).render_many(load_examples(path))
    lengths = sorted(len(r.input_ids) for r in rendered)
    cap = lengths[-2] + 1  # only the long example exceeds it
    report = check_file(path, tokenizer=tiny_tokenizer, max_length=cap)
    tokens = report.stats["tokens"]
    assert (tokens["min"], tokens["max"], tokens["examples"]) == (lengths[0], lengths[-1], 30)
    assert tokens["p95"] == lengths[28]  # nearest rank: ceil(0.95 * 30) = 29th value
    assert tokens["over_max_length"] == 1
    assert tokens["total"] == sum(lengths)
    assert tokens["total_after_truncation"] == sum(lengths) - lengths[-1] + cap
    long = next(r for r in rendered if len(r.input_ids) == lengths[-1])
    assert tokens["trained"] == sum(r.n_targets for r in rendered) - long.n_targets + sum(
        long.loss_mask[1:cap]
    )
    assert report.ok and report.warning_counts == {"example_truncated": 1, "duplicate_examples": 1}
    assert report.warnings[0]["line"] == 5


def test_truncation_that_removes_every_trained_token_warns(tmp_path, tiny_tokenizer):
    rows = chats(10)
    rows[0]["messages"][0]["content"] = "hello " * 200
    report = check_file(write(tmp_path / "t.jsonl", rows), tokenizer=tiny_tokenizer, max_length=64)
    assert report.warning_counts["no_trained_tokens"] == 1
    assert report.stats["tokens"]["dropped_no_trained_tokens"] == 1


def test_exact_and_near_duplicates_and_eval_overlap(tmp_path):
    rows = chats(10)
    rows.append(rows[1])  # line 11: exact copy of line 2
    near = json.loads(json.dumps(rows[4]))
    near["messages"][0]["content"] = "  QUESTION 4?! "  # line 12: near copy of line 5
    rows.append(near)
    train = write(tmp_path / "train.jsonl", rows)
    held = write(tmp_path / "eval.jsonl", [rows[7], chats(1, start=50)[0], near])
    report = check_file(train, eval_path=held)
    assert report.duplicates["groups"] == [
        {"kind": "exact", "lines": [2, 11]},
        {"kind": "near", "lines": [5, 12]},
    ]
    assert report.duplicates["eval_overlap"] == [
        {"eval_line": 1, "train_line": 8},
        {"eval_line": 3, "train_line": 5},
    ]
    assert report.ok  # duplicates and overlap are warnings
    overlap = [w for w in report.warnings if w["code"] == "train_eval_overlap"]
    assert [(w["line"], w["param"]) for w in overlap] == [(1, "validation_file"), (3, "validation_file")]


def test_eval_file_errors_name_the_validation_file(tmp_path):
    train = write(tmp_path / "train.jsonl", chats(10))
    held = write(tmp_path / "eval.jsonl", [chats(1)[0], "[2]"])
    report = check_file(train, eval_path=held)
    assert [(e["code"], e["line"], e["param"]) for e in report.errors] == [
        ("data_type", 2, "validation_file")
    ]


def test_estimate_follows_the_documented_formula(tiny_model_dir):
    params = count_params(tiny_model_dir, lora_r=8)
    # tiny llama: 2 layers, hidden 64, intermediate 128, 4 heads x 16, 2 kv heads
    per_layer = [(64, 64), (32, 64), (32, 64), (64, 64), (128, 64), (128, 64), (64, 128)]
    assert params.lora == 2 * sum(8 * (o + i) for o, i in per_layer)
    decoder = 2 * sum(o * i for o, i in per_layer)
    vocab = json.loads((Path(tiny_model_dir) / "config.json").read_text())["vocab_size"]
    assert params.matmul == decoder + vocab * 64  # untied LM head; embeddings cost no FLOPs
    est = estimate_training(params, tokens=1000, max_length=128, flop_rate=1e9, on_gpu=False)
    assert est["flops_per_token"] == 4 * params.matmul + 6 * params.lora
    assert est["seconds_per_epoch"] == pytest.approx(1000 * est["flops_per_token"] / 0.5e9)
    full = estimate_training(params, tokens=1000, max_length=128, adapter="none", flop_rate=1e9, on_gpu=False)
    assert full["flops_per_token"] == 6 * params.matmul
    assert full["memory_bytes"]["trainable_state"] == 12 * params.total
    assert est["memory_bytes"]["activations"] == 34 * 64 * 2 * 128 * 2


def test_check_with_model_reports_an_estimate(tmp_path, tiny_model_dir, tiny_tokenizer):
    report = check_file(
        write(tmp_path / "t.jsonl", chats(10)),
        tokenizer=tiny_tokenizer,
        model_dir=tiny_model_dir,
        flop_rate=1e9,
    )
    est = report.stats["estimate"]
    assert est["tokens_per_epoch"] == report.stats["tokens"]["total_after_truncation"]
    json.dumps(report.to_dict())


def test_streaming_memory_is_bounded(tmp_path):
    """A ~20 MB file is checked with a peak of traced Python memory far below its size.

    Memory is per row (two hashes per example, one token count with a tokenizer), so a 100 MB
    file behaves the same way with five times the (small) per-row part.
    """
    path = tmp_path / "big.jsonl"
    filler = "lorem ipsum dolor sit amet " * 40
    with path.open("w") as handle:
        for i in range(20_000):
            handle.write(
                json.dumps(
                    {
                        "messages": [
                            {"role": "user", "content": f"{i} {filler}"},
                            {"role": "assistant", "content": f"{filler} {i}"},
                        ]
                    }
                )
                + "\n"
            )
    assert path.stat().st_size > 20_000_000
    seen = []
    tracemalloc.start()
    try:
        report = check_file(path, progress=lambda done, total: seen.append((done, total)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok and report.n_examples == 20_000
    assert peak < 50_000_000, peak
    assert seen[-1][0] == seen[-1][1] == path.stat().st_size


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tunesmith")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_exit_codes_and_json(tmp_path, capsys, tiny_tokenizer_dir):
    good = write(tmp_path / "good.jsonl", chats(10))
    assert run_cli(["data", "check", str(good), "--model", str(tiny_tokenizer_dir)]) == 0
    out = capsys.readouterr().out
    assert "tokens per example" in out and "OK: the file is usable" in out
    bad = BAD / "weight_half.jsonl"
    assert run_cli(["data", "check", str(bad), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["errors"][0]["code"] == "invalid_weight"
    assert run_cli(["data", "check", str(bad)]) == 1
    assert "line 5, message 2: Invalid file format" in capsys.readouterr().out


def test_warning_codes_are_not_errors():
    assert not set(WARNING_CODES) & set(CODES)


def test_deeply_nested_line_is_invalid_json_naming_the_line(tmp_path):
    rows = chats(12)
    rows[4] = "[" * 5000 + "]" * 5000
    report = check_file(write(tmp_path / "t.jsonl", rows))
    assert [(e["line"], e["code"]) for e in report.errors] == [(5, "invalid_json")]
    assert "nested more than 100 levels deep" in report.errors[0]["message"]
    assert report.job_error()["code"] == "invalid_file_format"
