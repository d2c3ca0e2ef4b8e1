"""Several data sources: weighted mixing (exact counts), column renames, save_to_disk folders,
the data fingerprint, and errors that name the source, line and field."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter

import factory
import pytest

from tunesmith.config import load_config
from tunesmith.config.load import validate
from tunesmith.config.schema import DataSource
from tunesmith.data.readers import iter_rows
from tunesmith.data.sources import data_fingerprint, draw, mix, mixture_counts
from tunesmith.errors import ConfigError, DataError
from tunesmith.methods.common import train_eval_examples


def chats(n: int, tag: str, key: str = "messages") -> list[dict]:
    """``n`` chats whose answers name their source and index (``tag-i``)."""
    return [
        {key: [{"role": "user", "content": f"q {i}"}, {"role": "assistant", "content": f"{tag}-{i}"}]}
        for i in range(n)
    ]


def answers(examples) -> list[str]:
    return [e.messages[-1]["content"] for e in examples]


def config(data: dict, seed: int = 0):
    cfg = load_config({"model": "m", "data": data, "train": {"seed": seed}})
    validate(cfg)
    return cfg


def write_parquet(path, rows):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


# ---- the arithmetic ------------------------------------------------------------------------


def test_mixture_counts_are_largest_remainder_quotas():
    # 40 * 0.7 = 28, 40 * 0.3 = 12: exact
    assert mixture_counts([10, 30], [0.7, 0.3]) == [28, 12]
    # 10 / 3 = 3.33 each: floors 9, the one left goes to the first of equal remainders
    assert mixture_counts([5, 5, 5], [1, 1, 1], 10) == [4, 3, 3]
    # weights need not sum to 1: 2:1:1 of 7 -> quotas 3.5, 1.75, 1.75 -> floors 3, 1, 1 (5);
    # remainders .5, .75, .75 -> the two .75s get one each
    assert mixture_counts([1, 1, 1], [2, 1, 1], 7) == [3, 2, 2]


def test_mixture_counts_always_sum_to_the_total():
    rng = random.Random(0)
    for _ in range(200):
        k = rng.randint(1, 5)
        weights = [rng.uniform(0.01, 5) for _ in range(k)]
        total = rng.randint(1, 1000)
        counts = mixture_counts([1] * k, weights, total)
        assert sum(counts) == total
        for c, w in zip(counts, weights):
            assert abs(c - total * w / sum(weights)) < 1  # every count within 1 of its quota


def test_draw_repeats_whole_passes_then_a_distinct_subset():
    picks = draw(3, 7, random.Random(1))
    assert Counter(picks) in ({0: 3, 1: 2, 2: 2}, {0: 2, 1: 3, 2: 2}, {0: 2, 1: 2, 2: 3})
    few = draw(10, 4, random.Random(1))
    assert len(set(few)) == 4 and few == sorted(few)  # without replacement, file order


def test_mix_is_deterministic_per_seed_and_exact_per_source():
    pools = [[f"a{i}" for i in range(10)], [f"b{i}" for i in range(30)]]
    one = mix(pools, [0.7, 0.3], seed=3, role="train")
    assert one == mix(pools, [0.7, 0.3], seed=3, role="train")
    assert one != mix(pools, [0.7, 0.3], seed=4, role="train")
    got = Counter(x[0] for x in one)
    assert got == {"a": 28, "b": 12}
    a = Counter(x for x in one if x[0] == "a")
    assert sorted(a.values()) == [2] * 2 + [3] * 8  # 28 of 10: every one twice, 8 a third time
    assert len({x for x in one if x[0] == "b"}) == 12  # 12 of 30: no repeats


# ---- through the run's data path (train_eval_split) ----------------------------------------


def test_weighted_sources_give_exact_counts(tmp_path):
    a = factory.write_jsonl(tmp_path / "a.jsonl", chats(10, "a"))
    b = write_parquet(tmp_path / "b.parquet", chats(30, "b"))
    held = factory.write_jsonl(tmp_path / "eval.jsonl", chats(4, "e"))
    data = {"train": [{"path": str(a), "weight": 0.7}, {"path": str(b), "weight": 0.3}], "eval": str(held)}
    train, evals = train_eval_examples(config(data, seed=7), "sft")
    tags = Counter(x.split("-")[0] for x in answers(train))
    assert tags == {"a": 28, "b": 12}
    assert len(evals) == 4
    # deterministic for the seed, different for another
    assert answers(train_eval_examples(config(data, seed=7), "sft")[0]) == answers(train)
    assert answers(train_eval_examples(config(data, seed=8), "sft")[0]) != answers(train)
    # mix_size sets the mixture's size: 0.7 * 100 = 70 of a (7 passes of 10), 30 of b (all once)
    train, _ = train_eval_examples(config({**data, "mix_size": 100}), "sft")
    counts = Counter(answers(train))
    assert Counter(x.split("-")[0] for x in counts.elements()) == {"a": 70, "b": 30}
    assert all(counts[f"a-{i}"] == 7 for i in range(10)) and all(counts[f"b-{i}"] == 1 for i in range(30))


def test_without_weights_sources_are_concatenated_in_order(tmp_path):
    a = factory.write_jsonl(tmp_path / "a.jsonl", chats(3, "a"))
    b = factory.write_jsonl(tmp_path / "b.jsonl", chats(2, "b"))
    train, _ = train_eval_examples(config({"train": [str(a), {"path": str(b)}], "eval_fraction": 0}), "sft")
    assert answers(train) == ["a-0", "a-1", "a-2", "b-0", "b-1"]


def test_eval_fraction_is_held_out_of_each_source_before_mixing(tmp_path):
    a = factory.write_jsonl(tmp_path / "a.jsonl", chats(10, "a"))
    b = factory.write_jsonl(tmp_path / "b.jsonl", chats(20, "b"))
    data = {"train": [{"path": str(a), "weight": 3}, {"path": str(b), "weight": 1}], "eval_fraction": 0.1}
    train, evals = train_eval_examples(config(data), "sft")
    held = answers(evals)
    assert Counter(x.split("-")[0] for x in held) == {"a": 1, "b": 2}  # 10 % of each source
    assert not set(held) & set(answers(train))  # an up-sampled example never leaks into eval
    assert len(train) == 9 + 18  # the mixture has as many examples as the sources kept
    assert Counter(x.split("-")[0] for x in answers(train)) == {"a": 20, "b": 7}  # 27 * 3/4 = 20.25


def test_weighted_eval_sources_are_mixed_too(tmp_path):
    a = factory.write_jsonl(tmp_path / "a.jsonl", chats(4, "a"))
    b = factory.write_jsonl(tmp_path / "b.jsonl", chats(4, "b"))
    data = {"train": str(a), "eval": [{"path": str(a), "weight": 1}, {"path": str(b), "weight": 3}]}
    _, evals = train_eval_examples(config(data), "sft")
    assert Counter(x.split("-")[0] for x in answers(evals)) == {"a": 2, "b": 6}


# ---- column renames -------------------------------------------------------------------------


def test_columns_rename_fields_in_jsonl_and_parquet(tmp_path):
    a = factory.write_jsonl(tmp_path / "a.jsonl", chats(3, "a", key="conversation"))
    b = write_parquet(tmp_path / "b.parquet", chats(2, "b", key="dialog"))
    data = {
        "train": [
            {"path": str(a), "columns": {"messages": "conversation"}},
            {"path": str(b), "columns": {"messages": "dialog"}},
        ],
        "eval_fraction": 0,
    }
    train, _ = train_eval_examples(config(data), "sft")
    assert answers(train) == ["a-0", "a-1", "a-2", "b-0", "b-1"]
    # renamed rows keep the other fields; the source column is gone under its own name
    rows = list(iter_rows(DataSource(path=str(a), columns={"messages": "conversation"})))
    assert set(rows[0][1]) == {"messages"}


def test_columns_rename_alpaca_style_fields(tmp_path):
    path = factory.write_jsonl(tmp_path / "q.jsonl", [{"question": "2+2?", "answer": "4"}])
    source = DataSource(path=str(path), columns={"instruction": "question", "output": "answer"})
    train, _ = train_eval_examples(config({"train": [{"path": str(path), "columns": source.columns}]}), "sft")
    assert train[0].messages[-1]["content"] == "4"


def test_a_missing_mapped_column_names_file_line_and_column(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(
        json.dumps(chats(1, "a", key="conversation")[0]) + "\n" + json.dumps(chats(1, "a")[0]) + "\n"
    )
    with pytest.raises(DataError) as caught:
        list(iter_rows(DataSource(path=str(path), columns={"messages": "conversation"})))
    err = caught.value
    assert (err.path, err.line, err.field) == (str(path), 2, "conversation")
    assert "maps it to 'messages'" in str(err) and "this row's columns: messages" in str(err)


def test_format_errors_in_renamed_rows_name_the_source_and_line(tmp_path):
    rows = chats(2, "a", key="conversation")
    rows[1]["conversation"][0]["role"] = "robot"
    path = factory.write_jsonl(tmp_path / "a.jsonl", rows)
    with pytest.raises(DataError) as caught:
        train_eval_examples(
            config({"train": {"path": str(path), "columns": {"messages": "conversation"}}}), "sft"
        )
    # the field as the file names it, and how the source's columns read it
    assert (caught.value.path, caught.value.line, caught.value.field) == (
        str(path),
        2,
        "conversation[0].role",
    )
    assert "the source's columns read 'conversation' as 'messages'" in str(caught.value)


# ---- save_to_disk folders -------------------------------------------------------------------


@pytest.fixture
def datasets():
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()  # save_to_disk's bars would fill the test log
    return datasets


def test_save_to_disk_dataset_and_dataset_dict(tmp_path, datasets):
    datasets.Dataset.from_list(chats(5, "d")).save_to_disk(str(tmp_path / "ds"))
    splits = {
        "train": datasets.Dataset.from_list(chats(3, "t")),
        "test": datasets.Dataset.from_list(chats(2, "v")),
    }
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "dd"))

    assert [n for n, _ in iter_rows(tmp_path / "ds")] == [1, 2, 3, 4, 5]
    data = {
        "train": [
            {"path": str(tmp_path / "ds"), "weight": 1},
            {"path": str(tmp_path / "dd"), "split": "train", "weight": 1},
        ],
        "eval": {"path": str(tmp_path / "dd"), "split": "test"},
    }
    train, evals = train_eval_examples(config(data), "sft")
    assert Counter(x.split("-")[0] for x in answers(train)) == {"d": 4, "t": 4}
    assert answers(evals) == ["v-0", "v-1"]
    # a split's own folder reads as a Dataset
    assert len(list(iter_rows(tmp_path / "dd" / "test"))) == 2


def test_save_to_disk_errors(tmp_path, datasets):
    splits = {
        "train": datasets.Dataset.from_list(chats(1, "t")),
        "test": datasets.Dataset.from_list(chats(1, "v")),
    }
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "dd"))
    datasets.Dataset.from_list(chats(1, "d")).save_to_disk(str(tmp_path / "ds"))
    (tmp_path / "plain").mkdir()
    cases = [
        (str(tmp_path / "dd"), "DatasetDict with splits train, test; choose one"),
        (
            DataSource(path=str(tmp_path / "dd"), split="dev"),
            "no split 'dev' in this DatasetDict; its splits: train, test",
        ),
        (DataSource(path=str(tmp_path / "ds"), split="train"), "holds a single Dataset"),
        (
            str(tmp_path / "plain"),
            "this is a directory; expected a data file, or a folder written by datasets",
        ),
        (str(tmp_path / "absent"), "no such file or folder"),
    ]
    for source, message in cases:
        with pytest.raises(DataError, match=message.replace("(", r"\(")) as caught:
            list(iter_rows(source))
        assert caught.value.path == str(source)  # DataSource prints as its path


def test_split_on_a_file_is_an_error(tmp_path):
    path = factory.write_jsonl(tmp_path / "a.jsonl", chats(1, "a"))
    with pytest.raises(DataError, match="chooses a split of a folder saved by datasets"):
        list(iter_rows(DataSource(path=str(path), split="train")))


# ---- config errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"train": [{"path": "a.jsonl", "weight": 1}, "b.jsonl"]},
            r"'data.train\[1\]' \(b.jsonl\) has no weight",
        ),
        (
            {"train": [{"path": "a.jsonl", "wieght": 1}]},
            r"unknown key 'data.train\[0\].wieght'. Did you mean",
        ),
        ({"train": {"path": "a.jsonl", "weight": 0}}, r"'data.train.weight' must be a number > 0"),
        ({"train": [{"path": "a.jsonl", "weight": float("inf")}]}, r"'data.train\[0\].weight' must be"),
        ({"train": [{"weight": 1}]}, r"'data.train\[0\].path' is required"),
        (
            {"train": [{"path": "a.jsonl", "columns": {"messages": 3}}]},
            r"'data.train\[0\].columns.messages' = 3",
        ),
        ({"train": [{"path": "a.jsonl", "columns": ["x"]}]}, r"'data.train\[0\].columns' must be a mapping"),
        ({"train": "a.jsonl", "mix_size": 10}, "'data.mix_size' sizes a weighted mixture"),
        ({"train": [{"path": "a.jsonl", "weight": 1}], "mix_size": 0}, "'data.mix_size' must be >= 1"),
        ({"train": "a.jsonl", "eval": [{"path": "e.jsonl", "weight": 1}, "f.jsonl"]}, r"'data.eval\[1\]'"),
    ],
)
def test_bad_source_configs_are_clear_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        config(data)


# ---- fingerprint ----------------------------------------------------------------------------


def test_fingerprint_covers_files_weights_columns_and_splits(tmp_path):
    a = factory.write_jsonl(tmp_path / "a.jsonl", chats(3, "a"))
    b = factory.write_jsonl(tmp_path / "b.jsonl", chats(3, "b"))

    def fp(data):
        return data_fingerprint(config(data).data)

    # plain files: the fingerprint runs have always had (name + bytes per file)
    h = hashlib.sha256()
    for p in (a, b):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    assert fp({"train": [str(a), str(b)]}) == h.hexdigest()[:16]

    base = {"train": [{"path": str(a), "weight": 0.7}, {"path": str(b), "weight": 0.3}]}
    seen = {fp(base)}
    variants = [
        {"train": [{"path": str(a), "weight": 0.6}, {"path": str(b), "weight": 0.4}]},
        {
            "train": [
                {"path": str(a), "weight": 0.7, "columns": {"messages": "m"}},
                {"path": str(b), "weight": 0.3},
            ]
        },
        {**base, "mix_size": 10},
        {"train": [{"path": str(b), "weight": 0.3}, {"path": str(a), "weight": 0.7}]},
    ]
    for v in variants:
        seen.add(fp(v))
    assert len(seen) == 1 + len(variants)
    assert fp(base) == fp(base)
    a.write_text(a.read_text().replace("a-0", "a-9"))
    assert fp(base) not in seen


def test_fingerprint_of_a_save_to_disk_folder_reads_its_files(tmp_path, datasets):
    for where, tag in (("x", "d"), ("y", "d"), ("z", "e")):
        datasets.Dataset.from_list(chats(3, tag)).save_to_disk(str(tmp_path / where / "ds"))
    x, y, z = (data_fingerprint(config({"train": str(tmp_path / w / "ds")}).data) for w in "xyz")
    assert x == y != z  # same rows, same fingerprint; other rows, another


def test_data_check_reads_a_save_to_disk_folder(tmp_path, datasets):
    from tunesmith.data.tools.check import check_file

    rows = chats(12, "d")
    rows[4]["messages"][0]["role"] = "robot"
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    report = check_file(tmp_path / "ds", min_examples=1)
    assert report.n_examples == 12 and report.format is not None
    assert [(e["line"], e["code"]) for e in report.errors] == [(5, "unrecognized_role")]
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="is a directory"):
        check_file(tmp_path / "plain")
