"""A fine-tuning job -> its tunesmith run config (``RUN/config.yaml``): the one owner of that mapping.

The worker (:mod:`.worker`) trains every job with the config written here, and ``tunesmith openai
pull`` (:mod:`tunesmith.migrate.mapping`) writes the same one, so a pulled job trains exactly as
this server would train it. The mapping (docs/service.md):

* supervised and DPO jobs: ``method: sft`` / ``dpo``; ``n_epochs`` → ``train.epochs``,
  ``batch_size`` → ``train.batch_size`` (one unpacked example per batch slot), ``lr`` = the
  adapter's base rate (:func:`.spec.base_lr`) × ``learning_rate_multiplier``, the job's seed, an
  evaluation and a checkpoint per epoch, the last :data:`KEEP_CHECKPOINTS` kept. DPO is the
  original sigmoid loss with the job's ``beta``;
* reinforcement jobs: ``method: grpo`` over the prompt rows (:func:`.rft_data.prompts_path`),
  evaluation and checkpoints every ``eval_interval`` steps and the ``grpo`` section of
  :func:`.rft.grpo_section` (the grader as the reward); :class:`GraderUnavailable` when a judge
  model of the grader is not on this worker;
* the operator's ``--set KEY=VALUE`` (:attr:`.settings.Settings.train_overrides`) are applied
  last, by the dotted override parser of ``tunesmith train --set`` (:mod:`tunesmith.config.load`);
  ``grpo.*`` only to reinforcement jobs;
* continued fine-tuning: the parent run's adapter shape, initialised from its adapter folder
  (:func:`parent_adapter`).

The limits a worker checks a job's files against (:func:`max_length`, :func:`max_new_tokens`)
are the ones the run will use: the ``--set`` value, else the run config's default.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .. import rundir
from ..config.load import apply_override  # the CLI's dotted --set parser
from ..config.schema import GrpoConfig, TrainConfig
from . import rft
from .infer import model_folder
from .objects import base_name
from .rft_data import prompts_path
from .settings import Settings, judge_models
from .spec import base_lr, steps_per_epoch

KEEP_CHECKPOINTS = 3  # OpenAI keeps the checkpoints of the last 3 epochs
ADAPTER_SHAPE = ("type", "r", "alpha", "dropout", "targets", "top_layers", "rslora", "modules_to_save")
"""The adapter keys a continued job takes from its parent's run: its weights load only into the
same shape."""


class GraderUnavailable(Exception):
    """The job's grader names a judge model this worker does not have."""


class ParentGone(Exception):
    """The model a continued fine-tuning job starts from has disappeared."""


def write_config(settings: Settings, job: dict, method: dict, parent: dict | None = None) -> Path:
    """Write :func:`run_config` to ``RUN/config.yaml`` of ``job``; its path."""
    path = settings.run_dir(job["id"]) / "config.yaml"
    cfg = run_config(settings, job, method, parent)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def run_config(settings: Settings, job: dict, method: dict, parent: dict | None = None) -> dict:
    """The run config (a YAML-ready mapping) of ``job`` (a store row, ``n_examples`` known) with
    its resolved ``method``; for continued fine-tuning (``job["parent_job_id"]``) ``parent`` is
    the parent job's row (None: gone). Raises :class:`GraderUnavailable` for a reinforcement job
    whose judge is missing here, then :class:`ParentGone` (:func:`parent_adapter`)."""
    run = settings.run_dir(job["id"])
    h = method[method["type"]]["hyperparameters"]
    per_epoch = steps_per_epoch(job["n_examples"] or 1, h["batch_size"])
    cfg = {
        "model": {"path": str(settings.base_models[base_name(job)])},
        "method": "dpo" if method["type"] == "dpo" else "sft",
        "data": {
            "train": str(run / "data" / "train.jsonl"),
            "eval_fraction": 0.0,
            "eval": str(run / "data" / "valid.jsonl") if job["validation_file"] else None,
        },
        "adapter": {"type": settings.adapter},
        "train": {
            "epochs": h["n_epochs"],
            "batch_size": h["batch_size"],
            "lr": base_lr(settings.adapter) * h["learning_rate_multiplier"],
            "seed": int(job["seed"]),
            "packing": False,
            "save_every": per_epoch,
            "eval_every": per_epoch,
            "keep_last": KEEP_CHECKPOINTS,
            "progress": "lines",
        },
        "output_dir": str(run),
    }
    if method["type"] == "reinforcement":
        _grpo(settings, method, cfg)
    if method["type"] == "dpo":
        # OpenAI's DPO is the original sigmoid loss (Rafailov et al., 2023); its only extra
        # hyperparameter is beta (resolved "auto" -> 0.1). The reference model is the base with
        # the adapter disabled, as in config.schema.PreferenceConfig for adapters.
        cfg["preference"] = {"loss": "sigmoid", "beta": float(h["beta"])}
    for item in _overrides(settings, grpo=cfg["method"] == "grpo"):
        apply_override(cfg, item)
    if job.get("parent_job_id"):
        cfg["adapter"] = parent_adapter(settings, job, parent)
    return cfg


def _grpo(settings: Settings, method: dict, cfg: dict) -> None:
    """Turn the shared run config ``cfg`` into the reinforcement job's GRPO config, in place."""
    h = method["reinforcement"]["hyperparameters"]
    grader = method["reinforcement"]["grader"]
    judges = judge_models(settings)
    missing = sorted(rft.model_names(grader) - set(judges))
    if missing:
        raise GraderUnavailable(
            f"The grader's model {missing[0]!r} is not a grader model on this worker "
            "(--grader-model NAME=PATH)."
        )
    data = Path(cfg["data"]["train"]).parent
    cfg["method"] = "grpo"
    cfg["data"]["train"] = str(prompts_path(data / "train.jsonl"))
    if cfg["data"].get("eval"):
        cfg["data"]["eval"] = str(prompts_path(data / "valid.jsonl"))
    cfg["train"].update(rft.train_section(h, bool(cfg["data"].get("eval"))))
    cfg["grpo"] = rft.grpo_section(h, grader, judges)


def parent_adapter(settings: Settings, job: dict, parent: dict | None) -> dict:
    """Continued fine-tuning: the adapter section of ``job``, whose parent job row is ``parent``
    (None: gone) — the parent run's adapter shape (:data:`ADAPTER_SHAPE`: its weights must fit),
    starting from the parent's final or checkpoint adapter (``adapter.init_from``; checked
    against the shape by the trainer). :class:`ParentGone` when that adapter or run is gone."""
    folder = model_folder(settings, parent, job["parent_step"]) if parent else None
    run = rundir.RunDir(settings.run_dir(job["parent_job_id"]))
    if folder is None or not (folder / "adapter_config.json").is_file() or not run.resolved_config.is_file():
        raise ParentGone(f"The model {job['model']} that this job continues no longer exists.")
    shape = run.read_resolved_config()["adapter"]
    return {**{k: shape[k] for k in ADAPTER_SHAPE if k in shape}, "init_from": str(folder)}


def max_length(settings: Settings) -> int:
    """The longest example (tokens) a job's run trains on: ``--set train.max_length``, else the
    run config's default (:attr:`tunesmith.config.schema.TrainConfig.max_length`)."""
    return int(_overridden(settings, "train", "max_length", TrainConfig.max_length))


def max_new_tokens(settings: Settings) -> int:
    """Tokens sampled per answer in a reinforcement job's run: ``--set grpo.max_new_tokens``,
    else the run config's default (:attr:`tunesmith.config.schema.GrpoConfig.max_new_tokens`)."""
    return int(_overridden(settings, "grpo", "max_new_tokens", GrpoConfig.max_new_tokens))


def _overrides(settings: Settings, *, grpo: bool) -> list[str]:
    """The operator's ``--set`` items that apply to a job (``grpo.*``: reinforcement jobs only)."""
    return [
        item
        for item in settings.train_overrides
        if grpo or item.partition("=")[0].strip().partition(".")[0] != "grpo"
    ]


def _overridden(settings: Settings, section: str, key: str, default):
    raw: dict = {}
    for item in _overrides(settings, grpo=True):
        apply_override(raw, item)
    return (raw.get(section) or {}).get(key, default)
