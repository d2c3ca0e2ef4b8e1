"""config.resolve: every derived value from one function, as a new frozen config."""

from __future__ import annotations

import dataclasses

import pytest

from tunesmith.config import dump_config, load_config
from tunesmith.config.resolve import RunFacts, resolve

RAW = {
    "model": "m",
    "method": "dpo",
    "data": {"train": "t.jsonl"},
    "train": {"epochs": "auto", "batch_size": "auto", "lr": "auto"},
}
ALL = RunFacts(
    device="cpu",
    dtype="fp32",
    n_train=1_000,
    quant_bits=4,
    quant_compute_dtype="fp32",
    linear_modules=("q_proj", "v_proj"),
    warmup_steps=7,
)


def test_every_fact_fills_its_values_and_nothing_else():
    cfg = load_config(RAW)
    got = resolve(cfg, ALL)
    t = got.train
    assert (t.device, t.dtype, t.max_tokens_per_forward, t.warmup_steps) == ("cpu", "fp32", 1024, 7)
    assert (t.epochs, t.batch_size, t.lr) == (3.0, 2, 2e-4)  # 1 000 examples: 3 epochs, 0.2 % -> 2
    assert got.adapter.targets == ["q_proj", "v_proj"]
    assert (got.model.load_in_4bit, got.model.load_in_8bit, got.model.compute_dtype) == (True, False, "fp32")
    assert got.preference.beta == 0.1
    unchanged = dataclasses.replace(
        got,
        train=dataclasses.replace(
            got.train,
            device="auto",
            dtype="auto",
            max_tokens_per_forward=None,
            warmup_steps=None,
            epochs="auto",
            batch_size="auto",
            lr="auto",
        ),
        adapter=cfg.adapter,
        model=cfg.model,
        preference=cfg.preference,
    )
    assert unchanged == cfg


def test_the_input_is_untouched_and_the_result_frozen():
    cfg = load_config(RAW)
    before = dataclasses.asdict(cfg)
    got = resolve(cfg, ALL)
    assert dataclasses.asdict(cfg) == before and got is not cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.train.lr = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.preference.beta = 0.5


def test_unknown_facts_and_given_values_stay_as_written():
    cfg = load_config(
        {
            **RAW,
            "method": "reward",  # no preference loss: beta is not this method's
            "adapter": {"targets": ["o_proj"]},
            "train": {"warmup_steps": 3, "max_tokens_per_forward": 512, "lr": 1e-3},
        }
    )
    got = resolve(cfg, RunFacts(device="cpu", dtype="fp32", linear_modules=("q_proj",), warmup_steps=9))
    assert got.train.warmup_steps == 3 and got.train.max_tokens_per_forward == 512 and got.train.lr == 1e-3
    assert got.adapter.targets == ["o_proj"] and got.preference.beta == "auto"
    assert got.train.epochs == 1.0  # not auto; and no n_train known anyway
    assert resolve(cfg, RunFacts(device="cuda", dtype="bf16")).train.max_tokens_per_forward == 512
    full = load_config({**RAW, "adapter": {"type": "none"}})
    assert resolve(full, ALL).adapter.targets == "all-linear"  # no adapter, nothing to target
    assert (
        resolve(load_config(RAW), RunFacts(device="cuda", dtype="bf16")).train.max_tokens_per_forward is None
    )


def test_the_resolved_dump_is_byte_identical_for_the_same_inputs(tmp_path):
    dump_config(resolve(load_config(RAW), ALL), tmp_path / "a.yaml")
    dump_config(resolve(load_config(RAW), ALL), tmp_path / "b.yaml")
    text = (tmp_path / "a.yaml").read_text()
    assert text == (tmp_path / "b.yaml").read_text()
    assert "  targets:\n  - q_proj\n  - v_proj\n" in text and "  beta: 0.1\n" in text
    assert load_config(tmp_path / "a.yaml") == resolve(load_config(RAW), ALL)  # and it reloads
