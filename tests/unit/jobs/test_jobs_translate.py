"""jobs.translate: a job -> its run config, the operator's --set overrides, the worker's limits."""

from __future__ import annotations

import pytest
import yaml

from tunesmith.config import load_config
from tunesmith.jobs import translate
from tunesmith.jobs.settings import Settings


def _settings(tmp_path, *overrides: str, **kw) -> Settings:
    base = tmp_path / "base"
    base.mkdir(exist_ok=True)
    return Settings(
        db="unused://", data_dir=tmp_path, base_models={"tiny": base}, train_overrides=list(overrides), **kw
    )


def _job(kind: str = "supervised", **h) -> dict:
    hyper = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5, **h}
    return {
        "id": "ftjob-1",
        "model": "tiny",
        "seed": 7,
        "n_examples": 10,
        "validation_file": None,
        "method": {"type": kind, kind: {"hyperparameters": hyper}},
    }


def test_supervised_job_maps_epochs_batch_lr_and_one_checkpoint_per_epoch(tmp_path):
    job = _job()
    cfg = translate.run_config(_settings(tmp_path), job, job["method"])
    assert cfg["method"] == "sft" and cfg["adapter"] == {"type": "lora"}
    train = cfg["train"]
    # 10 examples at batch 4: ceil(10 / 4) = 3 steps per epoch; lr = 2e-4 (LoRA's base) x 0.5
    assert (train["epochs"], train["batch_size"], train["seed"]) == (2, 4, 7)
    assert train["save_every"] == train["eval_every"] == 3
    assert train["lr"] == pytest.approx(1e-4)
    assert train["keep_last"] == translate.KEEP_CHECKPOINTS and train["packing"] is False
    assert cfg["data"]["eval"] is None and cfg["output_dir"] == str(tmp_path / "runs" / "ftjob-1")


def test_dpo_job_is_the_sigmoid_loss_with_the_jobs_beta(tmp_path):
    job = _job("dpo", beta=0.25)
    cfg = translate.run_config(_settings(tmp_path), job, job["method"])
    assert cfg["method"] == "dpo" and cfg["preference"] == {"loss": "sigmoid", "beta": 0.25}


def test_set_overrides_use_the_cli_parser_and_grpo_keys_only_reach_reinforcement_jobs(tmp_path):
    settings = _settings(
        tmp_path, "train.max_length=256", "adapter.r=4", "grpo.max_new_tokens=16", "adapter.dropout=0.1"
    )
    job = _job()
    cfg = translate.run_config(settings, job, job["method"])
    assert cfg["train"]["max_length"] == 256
    assert cfg["adapter"] == {"type": "lora", "r": 4, "dropout": 0.1}
    assert "grpo" not in cfg
    settings.run_dir(job["id"]).mkdir(parents=True)
    path = translate.write_config(settings, job, job["method"])
    assert yaml.safe_load(path.read_text()) == cfg
    load_config(path)  # the written config is a valid run config


def test_worker_limits_are_the_set_values_else_the_run_configs_defaults(tmp_path):
    plain = _settings(tmp_path)
    defaults = load_config({"model": "m", "data": {"train": "t.jsonl"}})
    assert translate.max_length(plain) == defaults.train.max_length
    assert translate.max_new_tokens(plain) == defaults.grpo.max_new_tokens
    # a later --set wins, as in the written config
    tuned = _settings(tmp_path, "train.max_length=128", "train.max_length=96", "grpo.max_new_tokens=24")
    assert (translate.max_length(tuned), translate.max_new_tokens(tuned)) == (96, 24)


def test_continued_job_takes_the_parents_adapter_shape_and_fails_when_it_is_gone(tmp_path):
    settings = _settings(tmp_path)
    parent = {**_job(), "id": "ftjob-0"}
    run = settings.run_dir("ftjob-0")
    (run / "final").mkdir(parents=True)
    (run / "final" / "adapter_config.json").write_text("{}")
    resolved = {
        "adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "init_from": "x", "extra": 1}
    }
    (run / "config.resolved.yaml").write_text(yaml.safe_dump(resolved))
    job = {**_job(), "parent_job_id": "ftjob-0", "parent_step": None, "model": "ft:tiny:personal::abcdefgh"}
    cfg = translate.run_config(settings, job, job["method"], parent)
    assert cfg["adapter"] == {
        "type": "lora",
        "r": 8,
        "alpha": 16,
        "dropout": 0.0,
        "init_from": str(run / "final"),
    }
    with pytest.raises(translate.ParentGone):
        translate.run_config(settings, job, job["method"], None)
