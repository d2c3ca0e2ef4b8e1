"""``tunesmith eval … --lm-eval TASKS``: EleutherAI's lm-evaluation-harness on the models of an
evaluation, its numbers joined to tunesmith's report.

Each model runs through lm-eval's own Hugging Face backend (``HFLM``) as a user would run it by
hand, so the numbers are lm-eval's: the base (and any full model) by its folder — a ``.gguf`` base
by tunesmith's dequantised cache folder (:func:`tunesmith.models.gguf_import.resolve_model_path`)
— and an adapter through HFLM's ``peft=`` argument. A training checkpoint (``step-N``) has no
folder lm-eval could read; it is loaded by tunesmith and handed to HFLM as a model object. Every
model uses the evaluation's tokenizer folder (the run's, with its chat template).

TASKS are lm-eval task or group names (``hellaswag,arc_easy``) and/or task YAML files. A YAML
file's folder is added to lm-eval's task search path (so its ``include:`` and ``!function``
references resolve), and a relative ``dataset_kwargs.data_files`` path in it is read from that
folder, so ``examples/support/lm_eval/kettle_care_mc.yaml`` runs from any working folder.

lm-eval is asked for per-sample results (``log_samples``). Where a metric has a number per
document (``acc``, ``exact_match`` …) it becomes a tunesmith series ``lm-eval:<task>:<metric>``,
aggregated with tunesmith's bootstrap interval and compared between models with the paired
bootstrap and win / tie / loss over the same documents (:mod:`.stats`, through
:func:`.runner.summarize` / :func:`.runner.compare`); its mean equals lm-eval's own number. A
metric lm-eval only aggregates over the corpus (BLEU, perplexities) is reported with lm-eval's
value and no interval.
"""

from __future__ import annotations

import logging
import math
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .runner import EvalOptions, ModelScores, Series, compare, summarize

log = logging.getLogger("tunesmith")
PREFIX = "lm-eval:"


@dataclass
class HarnessOptions:
    """What ``--lm-eval`` asks of lm-eval: ``tasks`` (names or YAML paths), few-shot count,
    document limit per task, batch size, and whether prompts go through the chat template."""

    tasks: list[str]
    num_fewshot: int | None = None
    limit: int | None = None
    batch_size: int = 8
    apply_chat_template: bool = False


def parse_tasks(text: str) -> list[str]:
    """``--lm-eval`` value -> task items (comma-separated, blanks dropped)."""
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise ConfigError("--lm-eval: name at least one lm-eval task or task YAML file")
    return tasks


def _require_lm_eval():
    try:
        import lm_eval  # noqa: F401
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ConfigError(
            "--lm-eval needs lm-evaluation-harness: pip install lm-eval (or pip install 'tunesmith[lmeval]')"
        ) from None
    return TaskManager


def task_specs(tasks: list[str]) -> tuple[list, list[str]]:
    """The specs lm-eval's ``simple_evaluate`` takes (task names, or a YAML file's config as a
    dict) and the folders to add to its task search path."""
    specs, include = [], []
    for item in tasks:
        path = Path(item)
        if path.suffix in (".yaml", ".yml"):
            if not path.is_file():
                raise ConfigError(f"--lm-eval: task file not found: {item}")
            try:
                config = _load_task_yaml(path.resolve())
            except Exception as exc:  # noqa: BLE001 - YAML and !function errors of a user's file
                raise ConfigError(f"--lm-eval: {item}: not a valid lm-eval task file: {exc}") from None
            if not isinstance(config, dict) or "task" not in config:
                raise ConfigError(f"--lm-eval: {item}: an lm-eval task file needs a 'task:' name")
            _resolve_data_files(config, path.resolve().parent)
            specs.append(config)
            include.append(str(path.resolve().parent))
        elif path.is_dir():
            include.append(str(path.resolve()))
        else:
            specs.append(item)
    if not specs:
        raise ConfigError("--lm-eval: a folder only adds to the task search path; name the tasks too")
    return specs, list(dict.fromkeys(include))


def _load_task_yaml(path: Path) -> dict:
    """A task YAML as lm-eval reads it (``include:`` merged, ``!function`` resolved): its loader
    moved from ``lm_eval.utils.load_yaml_config`` (≤ 0.4.9) to ``lm_eval.tasks._yaml_loader``."""
    try:
        from lm_eval.tasks._yaml_loader import load_yaml
    except ImportError:
        from lm_eval.utils import load_yaml_config

        return load_yaml_config(str(path))
    return load_yaml(path)


def _resolve_data_files(config: dict, folder: Path) -> None:
    """Relative local ``dataset_kwargs.data_files`` of a task file, made absolute against the
    file's folder when they exist there (and not in the working folder)."""
    kwargs = config.get("dataset_kwargs")
    files = kwargs.get("data_files") if isinstance(kwargs, dict) else None
    if files is None:
        return

    def fix(value):
        if isinstance(value, str) and not Path(value).is_absolute() and not Path(value).exists():
            candidate = folder / value
            return str(candidate) if candidate.exists() else value
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        return value

    kwargs["data_files"] = fix(files)


@dataclass
class HarnessModel:
    """One model as lm-eval sees it: ``model_args`` for HFLM (paths), or a loaded ``instance``."""

    name: str
    model_args: dict
    instance: object = None

    def command(self, tasks: list[str], options: HarnessOptions) -> str | None:
        """The equivalent ``lm_eval`` command line (None for a model handed over as an object)."""
        if self.instance is not None:
            return None
        args = ",".join(
            f"{k}={v}" for k, v in self.model_args.items() if k in ("pretrained", "peft", "tokenizer")
        )
        parts = ["lm_eval", "--model", "hf", "--model_args", args, "--tasks", ",".join(tasks)]
        if options.num_fewshot is not None:
            parts += ["--num_fewshot", str(options.num_fewshot)]
        if options.limit is not None:
            parts += ["--limit", str(options.limit)]
        if options.apply_chat_template:
            parts.append("--apply_chat_template")
        return shlex.join(parts)


def harness_model(model, ctx, tokenizer_dir: str, load_instance) -> HarnessModel:
    """``model`` (an :class:`.models.EvalModel`) as lm-eval loads it; ``load_instance()`` loads
    a checkpoint the tunesmith way (there is no folder to give lm-eval)."""
    from ..models.gguf_import import resolve_model_path

    if model.kind == "checkpoint":
        return HarnessModel(model.name, {}, instance=load_instance())
    args = {"pretrained": resolve_model_path(model.path), "tokenizer": tokenizer_dir}
    if model.kind == "adapter":
        args["peft"] = model.adapter
    args["trust_remote_code"] = ctx.trust_remote_code
    return HarnessModel(model.name, args)


def run_model(hm: HarnessModel, specs: list, include: list[str], options: HarnessOptions, device, tokenizer):
    """lm-eval's ``simple_evaluate`` for one model: its results dict (with ``samples``)."""
    TaskManager = _require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    # Every model gets tunesmith's tokenizer object (the run's, chat template included), so all
    # see the same prompts; the command line names its folder.
    common = {"device": str(device), "batch_size": options.batch_size, "tokenizer": tokenizer}
    if hm.instance is not None:
        lm = HFLM(pretrained=hm.instance, **common)
    else:
        args = {k: v for k, v in hm.model_args.items() if k != "tokenizer"}
        lm = HFLM(**args, dtype="float32" if device.type == "cpu" else "auto", **common)
    try:
        return simple_evaluate(
            model=lm,
            tasks=specs,
            num_fewshot=options.num_fewshot,
            limit=options.limit,
            log_samples=True,
            apply_chat_template=options.apply_chat_template,
            # Indexing lm-eval's thousands of built-in task files takes ~20 s on a small CPU:
            # skipped when every task is a file of the user's
            task_manager=TaskManager(
                include_path=include or None,
                include_defaults=any(isinstance(spec, str) for spec in specs),
            ),
        )
    except (ValueError, KeyError, FileNotFoundError) as exc:
        raise ConfigError(f"--lm-eval: lm-eval could not run {', '.join(options.tasks)}: {exc}") from None


def sample_series(results: dict) -> tuple[dict[str, Series], dict[str, dict]]:
    """Per-document series ``lm-eval:<task>:<metric>`` from lm-eval's ``samples`` (documents in
    ``doc_id`` order), and the corpus-level metrics that have no per-document number
    (``{name: {"value", "stderr"}}``)."""
    series, aggregate = {}, {}
    for task, samples in (results.get("samples") or {}).items():
        ordered = sorted(samples, key=lambda s: (s["doc_id"], s.get("filter", "none")))
        by_metric: dict[str, list] = {}
        for sample in ordered:
            suffix = "" if sample.get("filter", "none") == "none" else f",{sample['filter']}"
            for metric in sample.get("metrics", []):
                by_metric.setdefault(f"{PREFIX}{task}:{metric}{suffix}", []).append(sample.get(metric))
        for name, values in by_metric.items():
            if values and all(_is_number(v) for v in values):
                series[name] = Series([float(v) for v in values])
    for task, row in (results.get("results") or {}).items():
        for key, value in row.items():
            if "_stderr," in key or key == "alias" or not _is_number(value) or "," not in key:
                continue
            metric, _, flt = key.partition(",")
            name = f"{PREFIX}{task}:{metric}" + ("" if flt == "none" else f",{flt}")
            if name not in series:
                stderr = row.get(f"{metric}_stderr,{flt}")
                aggregate[name] = {"value": float(value), "stderr": stderr if _is_number(stderr) else None}
    return series, aggregate


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def add_to_report(
    report: dict,
    per_model: dict[str, dict],
    eval_options: EvalOptions,
    options: HarnessOptions,
    commands: dict,
) -> None:
    """Join lm-eval's numbers into ``report`` (the dict :mod:`.report` renders): each model's
    metrics with tunesmith's bootstrap interval, the first model's paired comparison with each
    other, lm-eval's own table under ``report["lm_eval"]``, and notes naming the commands."""
    names = [m["name"] for m in report["models"] if m["name"] in per_model]  # not --against's answers
    scores = {}
    for name in names:
        series, aggregate = sample_series(per_model[name])
        scores[name] = ModelScores(name, "lm-eval", series=series)
        metrics = report["metrics"].setdefault(name, {})
        metrics.update(summarize(scores[name], eval_options))
        for metric, agg in aggregate.items():
            metrics[metric] = {"value": agg["value"], "low": None, "high": None, "n": None}
    for comparison in report["comparisons"]:
        if comparison["baseline"] not in scores:
            continue
        comparison["metrics"].update(
            compare(scores[comparison["model"]], scores[comparison["baseline"]], eval_options)
        )
    first = per_model[names[0]]
    report["lm_eval"] = {
        "tasks": options.tasks,
        "num_fewshot": options.num_fewshot,
        "limit": options.limit,
        "apply_chat_template": options.apply_chat_template,
        "version": _version(),
        "results": {name: per_model[name].get("results", {}) for name in names},
        "n_samples": first.get("n-samples"),
        "commands": commands,
    }
    report["notes"].append(
        f"lm-evaluation-harness {_version()} on {', '.join(options.tasks)}: metrics named lm-eval:<task>:<metric>; "
        "intervals are tunesmith's bootstrap over lm-eval's per-document results (lm-eval's own "
        "values and standard errors are in report.json under lm_eval)."
    )
    for name, command in commands.items():
        if command:
            report["notes"].append(f"lm-eval for {name}: {command}")


def _version() -> str:
    import importlib.metadata as md

    try:
        return md.version("lm_eval")
    except md.PackageNotFoundError:
        return "?"


def run_harness(models, ctx, tokenizer, device, options: HarnessOptions, load_instance) -> tuple[dict, dict]:
    """Run lm-eval on every model; returns ``({model name: results}, {model name: command})``.
    ``load_instance(model)`` loads a checkpoint model the tunesmith way."""
    from ..models.gguf_import import resolve_model_path
    from .models import eval_tokenizer_source

    _require_lm_eval()
    specs, include = task_specs(options.tasks)
    tokenizer_dir = resolve_model_path(eval_tokenizer_source(ctx, models[0])[0])
    per_model, commands = {}, {}
    for m in models:
        hm = harness_model(m, ctx, tokenizer_dir, lambda m=m: load_instance(m))
        log.info("lm-eval: %s on %s", m.name, ", ".join(options.tasks))
        per_model[m.name] = run_model(hm, specs, include, options, device, tokenizer)
        commands[m.name] = hm.command(options.tasks, options)
        del hm
    return per_model, commands
