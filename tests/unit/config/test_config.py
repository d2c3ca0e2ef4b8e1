from __future__ import annotations

from dataclasses import fields

import pytest
import yaml

from tunesmith.config import RunConfig, dump_config, load_config, validate
from tunesmith.errors import ConfigError

ISSUE_EXAMPLE = """
model: ./path/to/hf-model
method: sft
data:
  train: train.jsonl
  eval: eval.jsonl
adapter:
  type: lora
  r: 16
  alpha: 32
  dropout: 0.05
  targets: all-linear
train:
  epochs: 1
  lr: 2.0e-4
  batch_size: 8
  grad_accum: 1
  max_length: 1024
  packing: true
  seed: 0
  save_every: 50
  eval_every: 50
output_dir: runs/my-run
"""


def test_documented_shape_is_accepted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(ISSUE_EXAMPLE)
    cfg = load_config(path)
    assert cfg.model.path == "./path/to/hf-model" and cfg.adapter.alpha == 32.0 and cfg.train.lr == 2e-4
    validate(cfg)


def test_overrides_and_round_trip(tmp_path):
    cfg = load_config(
        {"model": "m", "data": {"train": "t.jsonl"}},
        [
            "train.lr=1e-5",
            "model.chat_template=t.jinja",
            "adapter.targets=[q_proj,v_proj]",
            "train.max_steps=7",
        ],
    )
    assert cfg.train.lr == 1e-5 and cfg.model.path == "m" and cfg.model.chat_template == "t.jinja"
    assert cfg.adapter.targets == ["q_proj", "v_proj"] and cfg.train.max_steps == 7
    dump_config(cfg, tmp_path / "r.yaml")
    assert load_config(tmp_path / "r.yaml") == cfg
    # Every section of the schema is written, in schema order, and nothing else.
    assert list(yaml.safe_load((tmp_path / "r.yaml").read_text())) == [f.name for f in fields(RunConfig)]


@pytest.mark.parametrize(
    "raw,message",
    [
        ({"trian": {}}, "unknown key 'trian'. Did you mean 'train'?"),
        ({"train": {"bach_size": 2}}, "unknown key 'train.bach_size'. Did you mean 'train.batch_size'?"),
        ({"adapter": {"type": "lorra"}}, "is not one of lora, dora, qlora, none. Did you mean 'lora'?"),
        ({"train": {"batch_size": "eight"}}, "'train.batch_size' = 'eight' is not an integer or one of auto"),
        ({"train": {"packing": "yes"}}, "'train.packing' = 'yes' must be true/false"),
        ({"train": 3}, "'train' must be a mapping"),
    ],
)
def test_bad_configs_are_explained(raw, message):
    with pytest.raises(ConfigError) as err:
        load_config({"model": "m", **raw})
    assert message in str(err.value)


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="data.train"):
        validate(load_config({"model": "m"}))
    with pytest.raises(ConfigError, match="batch_size"):
        validate(load_config({"model": "m", "data": {"train": "x"}, "train": {"batch_size": 0}}))
    assert RunConfig().train.dtype == "auto"


def test_preference_keys_follow_the_loss():
    raw = {"model": "m", "method": "dpo", "data": {"train": "x"}}
    validate(load_config({**raw, "preference": {"loss": "ipo", "length_normalize": True}}))
    with pytest.raises(ConfigError, match="'preference.length_normalize' applies to loss ipo; .* sigmoid"):
        validate(load_config({**raw, "preference": {"length_normalize": True}}))
    with pytest.raises(ConfigError, match="loss simpo uses no reference model"):
        validate(load_config({**raw, "preference": {"loss": "simpo", "precompute_reference": True}}))
    # auto values are checked once resolved; a given one now (before any data is read)
    with pytest.raises(ConfigError, match="'train.batch_size' must be >= 1"):
        validate(load_config({**raw, "train": {"batch_size": 0, "lr": "auto"}}))


def test_override_mistakes_blame_set_not_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: m\ndata: {train: t.jsonl}\ntrain: {lr: 1.0e-4}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["train.bach_size=4"])
    msg = str(err.value)
    assert msg.startswith("--set train.bach_size=4: unknown key 'train.bach_size'.")
    assert "Did you mean 'train.batch_size'?" in msg and str(path) not in msg
    with pytest.raises(
        ConfigError, match=r"^--set trian\.lr=1: unknown key 'trian'\. Did you mean 'train'\?"
    ):
        load_config(path, ["trian.lr=1"])
    with pytest.raises(ConfigError, match=r"^--set train\.lr=abc: 'train\.lr' = 'abc' is not a number"):
        load_config(path, ["train.batch_size=2", "train.lr=abc"])
    with pytest.raises(ConfigError, match=r"^--set train: an override must look like section\.key=value"):
        load_config(path, ["train"])


def test_file_mistakes_still_blame_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: m\ntrain: {bach_size: 4}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["train.lr=1e-4"])
    assert str(err.value).startswith(f"{path}: unknown key 'train.bach_size'.")
