"""One fine-tuning job (OpenAI's ``fine_tuning.job`` object) -> a tunesmith run config.

The mapping of a supervised or DPO job is the jobs worker's own
(:func:`tunesmith.jobs.translate.write_config`: epochs, batch size, ``lr = base_lr(adapter)
× learning_rate_multiplier`` with ``base_lr`` = :func:`tunesmith.config.auto.auto_lr`, DPO beta
with the sigmoid loss, the job's seed, one checkpoint per epoch), so a pulled job trains exactly
as a tunesmith server would train it. ``"auto"`` values of a job that never started are
resolved by the server's rule (:func:`tunesmith.jobs.spec.resolve_method`).

A reinforcement (RFT) job becomes ``method: grpo`` whose reward (``type: grader``) is the job's
grader object as it is (the graders package runs OpenAI's grader types); its rows
(``{"messages": [...], <fields>}``) become prompt-only rows (``{"prompt": [...], <fields>}``,
``data/train.prompts.jsonl``) so the grader's ``{{item.<field>}}`` and ``{{item.messages}}`` read
the same values. That mapping, and the rows' checks, are the jobs worker's own
(:mod:`tunesmith.jobs.translate`, :mod:`tunesmith.jobs.rft_data`: group size from
``compute_multiplier``, checkpoints at ``eval_interval`` …). ``--judge-model`` becomes the judge
of every model grader.

What cannot be mapped raises :class:`Unmappable` with a one-line reason: a base model with no
open base given, an unknown method type, a grader that does not parse or whose score_model /
label_model has no local judge, a vision dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import TunesmithError

METHOD_TYPES = ("supervised", "dpo", "reinforcement")
DEFAULT_BASE = "*"  # key of the open base used for every OpenAI base without its own mapping
IMAGE_PART_TYPES = ("image_url", "input_image", "image")
RFT_UNMAPPED = {"reasoning_effort": "open models here have no reasoning-effort setting"}


class Unmappable(TunesmithError):
    """A job that has no tunesmith equivalent; the message is the reason, one line."""


@dataclass
class MapOptions:
    """How jobs map: ``base_models`` maps an OpenAI base model name (or :data:`DEFAULT_BASE`)
    to a local model (folder or ``.gguf``); ``adapter`` lora | dora | none; ``overrides``
    ``KEY=VALUE`` settings applied to every config (as the worker's ``--set``);
    ``judge_model`` the local judge of RFT graders' score_model / label_model graders."""

    base_models: dict[str, str]
    adapter: str = "lora"
    overrides: list[str] = field(default_factory=list)
    judge_model: str | None = None


@dataclass
class Mapped:
    """A job mapped: its config file, the training settings it got, and notes for the reader."""

    config: Path
    summary: dict
    notes: list[str] = field(default_factory=list)


def job_dict(job: Any) -> dict:
    """An SDK ``FineTuningJob`` (or a dict of the same shape) as plain JSON data. (The SDK
    builds response objects leniently: a grader may come back as the union's first type with
    the real fields as extras, and its unset fields as None; :func:`source_method` drops those.)"""
    if hasattr(job, "model_dump"):
        return job.model_dump(mode="json", warnings=False)
    return json.loads(json.dumps(job))


def without_none(value: Any) -> Any:
    """``value`` with every None-valued key of every nested object removed (the SDK's unset
    optional fields)."""
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_none(v) for v in value]
    return value


def source_method(job: dict) -> dict:
    """The job's method in OpenAI's shape ``{"type": T, T: {...}}`` without unset (None)
    fields. A job without ``method`` (created with the deprecated top-level
    ``hyperparameters``) is supervised with those."""
    method = job.get("method")
    if not method or not method.get("type"):
        hyper = without_none(job.get("hyperparameters") or {})
        return {"type": "supervised", "supervised": {"hyperparameters": hyper}}
    kind = method["type"]
    section = without_none(method.get(kind) or {})
    section["hyperparameters"] = section.get("hyperparameters") or {}
    return {"type": kind, kind: section}


def open_base(job: dict, base_models: dict[str, str]) -> str:
    """The local model that stands in for the job's base model (for an ``ft:`` model, the base
    named inside it): its own mapping, else the default; else Unmappable."""
    from ..jobs.objects import base_name

    name = base_name(job)
    path = base_models.get(name) or base_models.get(DEFAULT_BASE)
    if path is None:
        raise Unmappable(
            f"base model {name} has no open model to stand in for it (add --base-model "
            f"{name}=PATH, or a default --base-model PATH)"
        )
    return path


def find_image(path: Path) -> str | None:
    """``"line N"`` of the first row of a JSONL file with an image content part, else None."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if any(t in line for t in IMAGE_PART_TYPES) and _has_image(_loads(line)):
                return f"line {number}"
    return None


def _loads(line: str) -> Any:
    from ..jsontext import loads

    try:
        return loads(line)
    except ValueError:  # not this check's business: the row checks name bad lines
        return None


def _has_image(value: Any) -> bool:
    if isinstance(value, dict):
        if value.get("type") in IMAGE_PART_TYPES:
            return True
        return any(_has_image(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_image(v) for v in value)
    return False


def map_job(job: dict, run_dir: Path, n_examples: int, options: MapOptions) -> Mapped:
    """Write ``run_dir/config.yaml`` for ``job`` (a :func:`job_dict`) whose files are already
    staged as ``run_dir/data/train.jsonl`` (and ``valid.jsonl``); ``n_examples`` is the
    training file's row count (it resolves ``"auto"``). Raises :class:`Unmappable`."""
    method = source_method(job)
    base, judges = _check_mappable(job, method, run_dir, options)
    from ..jobs.spec import resolve_method

    resolved = resolve_method(_with_autos(method), n_examples)
    notes = _auto_notes(method, resolved)
    if judges is not None:
        from ..jobs import rft_worker

        rft_worker.ensure_prompts(run_dir, job)  # the GRPO rows the worker's config reads
        notes += [note for note in [rft_worker.eval_samples_note(resolved)] if note]
        notes += [
            f"{key}={value} is not mapped: {RFT_UNMAPPED[key]}"
            for key, value in resolved["reinforcement"]["hyperparameters"].items()
            if key in RFT_UNMAPPED and value not in (None, "auto", "default")
        ]
    config = _worker_config(job, resolved, run_dir, base, n_examples, options, judges)
    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    from ..config import load_config

    load_config(config)  # a bad --set key fails here, naming the key
    h = resolved[resolved["type"]]["hyperparameters"]
    summary = {
        "method": cfg["method"],
        "model": cfg["model"]["path"],
        "adapter": cfg["adapter"]["type"],
        "epochs": cfg["train"]["epochs"],
        "batch_size": cfg["train"]["batch_size"],
        "lr": cfg["train"]["lr"],
        "learning_rate_multiplier": h["learning_rate_multiplier"],
        "seed": cfg["train"]["seed"],
    }
    if "preference" in cfg:
        summary["beta"] = cfg["preference"]["beta"]
    return Mapped(config, summary, notes)


def _check_mappable(job: dict, method: dict, run_dir: Path, options: MapOptions) -> tuple[str, dict | None]:
    """The open base of ``job`` and, for an RFT job, its judges (``{grader model: path}``);
    Unmappable for an unknown method, a base without an open model, images in the staged
    files, an RFT grader or row GRPO cannot take."""
    if method["type"] not in METHOD_TYPES:
        raise Unmappable(
            f"method type {method['type']!r} has no tunesmith mapping (mapped: {', '.join(METHOD_TYPES)})"
        )
    base = open_base(job, options.base_models)
    staged = [
        run_dir / "data" / n for n in ("train.jsonl", "valid.jsonl") if (run_dir / "data" / n).is_file()
    ]
    for path in staged:
        where = find_image(path)
        if where:
            which = "training" if path.name == "train.jsonl" else "validation"
            raise Unmappable(
                f"vision dataset: the {which} file has an image part at {where}; "
                "tunesmith trains text-only models"
            )
    if method["type"] != "reinforcement":
        return base, None
    judges = _checked_grader(method, options.judge_model)
    _check_rft_rows(run_dir, method)
    return base, judges


def _with_autos(method: dict) -> dict:
    """``method`` with every hyperparameter the job left out set to ``"auto"`` (as OpenAI reads
    an omitted one), so that :func:`~tunesmith.jobs.spec.resolve_method` resolves it."""
    from ..jobs.rft import RFT_KEYS
    from ..jobs.spec import DPO_KEYS, HYPER_KEYS

    kind = method["type"]
    h = method[kind]["hyperparameters"]
    keys = {"dpo": DPO_KEYS, "reinforcement": RFT_KEYS}.get(kind, HYPER_KEYS)
    autos = dict.fromkeys(keys, "auto")
    if kind == "reinforcement":
        autos["reasoning_effort"] = "default"
    return {**method, kind: {**method[kind], "hyperparameters": {**autos, **h}}}


def _auto_notes(method: dict, resolved: dict) -> list[str]:
    kind = method["type"]
    given, got = method[kind]["hyperparameters"], resolved[kind]["hyperparameters"]
    return [
        f"{k} was 'auto' on the source (the job never resolved it); tunesmith's rule gives {got[k]}"
        for k in sorted(got)
        if given.get(k, "auto") == "auto" and got.get(k) != "auto" and k not in RFT_UNMAPPED
    ]


def _worker_config(
    job: dict,
    method: dict,
    run_dir: Path,
    base: str,
    n_examples: int,
    options: MapOptions,
    judges: dict[str, str] | None = None,
) -> Path:
    """The jobs worker's config for ``job`` (one owner of job -> config), written as the worker
    writes it into its run folder: here ``run_dir`` (the worker's ``runs/<job id>``).
    ``judges`` maps the grader's model names to local judges (the worker's grader models)."""
    try:
        from ..jobs.settings import Settings
        from ..jobs.translate import write_config
    except ImportError as exc:
        raise TunesmithError(
            f"tunesmith openai pull needs the service extra (pip install 'tunesmith[service]'): {exc}"
        ) from None
    if run_dir.name != job["id"]:
        raise ValueError(f"run_dir {run_dir} must be named after the job {job['id']}")
    from ..jobs.objects import base_name

    extra = {"grader_models": {name: Path(path) for name, path in judges.items()}} if judges else {}
    settings = Settings(
        db="unused://",
        data_dir=run_dir.parent.parent,
        adapter=options.adapter,
        base_models={base_name(job): Path(base)},
        train_overrides=list(options.overrides),
        **extra,
    )
    row = {**job, "n_examples": n_examples, "method": method, "parent_job_id": None}
    return write_config(settings, row, method)


# -- reinforcement ---------------------------------------------------------------------------------


def _checked_grader(method: dict, judge_model: str | None) -> dict[str, str]:
    """Check the RFT job's grader object with the graders package: it parses, reads text only,
    and every score_model / label_model grader has a local judge. Returns ``{grader model name:
    judge path}`` (empty without model graders); Unmappable otherwise."""
    from ..graders import GraderError, judge_paths, parse_grader
    from ..graders.judge import check_text_only

    grader = (method.get("reinforcement") or {}).get("grader")
    where = "method.reinforcement.grader"
    if not isinstance(grader, dict):
        raise Unmappable(f"{where} is missing: a reinforcement job needs its grader")
    try:
        spec = parse_grader(grader, where)
        check_text_only(spec, where)
        return judge_paths([(where, spec)], judge_model, "--judge-model")
    except GraderError as exc:
        raise Unmappable(f"{exc.path}: {exc.bare_message}") from None
    except ValueError as exc:  # --judge-model given but this grader has no model grader
        raise Unmappable(str(exc)) from None


def _check_rft_rows(run_dir: Path, method: dict) -> None:
    """The staged RFT files checked by the jobs worker's own rules (:func:`tunesmith.jobs.rft_data.
    check_rft_files`: messages without the answer, every ``{{item.key}}`` the grader reads);
    Unmappable with the first problem, naming the example. The server's 10-example minimum is
    left to the server the job is pushed to: it is a policy, not a reason the job cannot map."""
    from ..graders import item_keys, parse_grader
    from ..jobs.rft_data import check_rft_files

    data = run_dir / "data"
    valid = data / "valid.jsonl"
    required = item_keys(parse_grader(method["reinforcement"]["grader"], "grader")) - {"messages", "prompt"}
    check = check_rft_files(
        data / "train.jsonl", valid if valid.is_file() else None, required=required, tokenizer=None, room=0
    )
    problems = [e for e in check.report.errors if e["code"] != "invalid_n_examples"]
    if problems:
        raise Unmappable(f"reinforcement data: {problems[0]['message']}")
