"""``run_eval``: evaluate one or more models on a held-out file and write the report.

    report = run_eval("runs/quickstart", "examples/support/heldout.jsonl", compare=["base"])

writes ``report.json``, ``report.html`` and ``predictions.jsonl`` into ``out_dir`` (default
``RUN/eval``) and returns the report dict (see :mod:`.report` for its keys).
"""

from __future__ import annotations

import gc
import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..errors import ConfigError
from ..models.device import resolve_device
from .data import EvalData, load_eval_data
from .harness import HarnessOptions, add_to_report, run_harness
from .models import EvalModel, load_eval_model, load_eval_tokenizer, resolve_spec, resolve_target
from .recorded import RecordedFile, match_answers, read_recorded
from .report import training_curves, write_report
from .runner import (
    EvalOptions,
    ModelScores,
    Prepared,
    add_agreement,
    add_implicit_reward,
    add_reward_model_scores,
    compare,
    example_rows,
    highlights,
    score_model,
    score_recorded,
    summarize,
)

log = logging.getLogger("tunesmith")
RECORDED_NAME = "recorded"  # the column of --against's answers


def run_eval(
    target: str,
    data_path: str | None = None,
    *,
    model: str | None = None,
    compare_with: list[str] | tuple = (),
    options: EvalOptions | None = None,
    out_dir: str | Path | None = None,
    limit: int | None = None,
    device: str = "auto",
    reward_model: str | None = None,
    against: str | None = None,
    lm_eval: HarnessOptions | None = None,
) -> dict:
    """Evaluate ``model`` (default: the run's ``final``) and every ``compare_with`` spec.

    Args:
        target: run config (YAML), run directory, or model / adapter folder.
        data_path: held-out file; default the run config's ``data.eval``.
        model / compare_with: model specs (see :mod:`.models`); the first is compared with each
            of the others.
        limit: evaluate only the first ``limit`` rows.
        reward_model: a reward-model folder (``tunesmith.models.reward_model``) that scores the
            generated replies and whose pairwise accuracy is reported on preference data.
        against: a recorded-answers file (:mod:`.recorded`, written by ``tunesmith openai
            record``): its answers join the comparison as the model ``recorded`` (kind
            ``recorded``, scored by the same scorers and graders), and the first model gains
            ``agree:<metric>`` — its replies scored with the recorded answer as the reference.
        lm_eval: also run lm-evaluation-harness tasks on every model (:mod:`.harness`); its
            numbers join the same report. With it, the held-out file is optional: without one
            (no ``data_path``, no ``data.eval`` in the run config) the report holds lm-eval's
            numbers only.
    """
    options = options or EvalOptions()
    ctx = resolve_target(target)
    specs = [model or ctx.default_spec, *compare_with]
    models = [resolve_spec(s, ctx) for s in specs]
    _unique_names(models)
    data_path = data_path or _config_eval_file(ctx, required=lm_eval is None)
    data = load_eval_data(data_path, limit) if data_path else EvalData("", "none")
    recorded = _read_against(against, data, data_path, options)
    dev = resolve_device(device)
    tokenizer = load_eval_tokenizer(ctx, models[0])
    prep = Prepared(data, tokenizer, options)
    _load_judge(options)
    log.info(
        "eval: %d examples and %d preference pairs from %s; models: %s",
        len(data.items),
        len(data.pairs),
        data_path,
        ", ".join(m.name for m in models),
    )

    all_scores, timings = [], {}
    for m in models:
        t0 = time.perf_counter()
        if len(data):
            lm = load_eval_model(m, ctx, dev)
            all_scores.append(score_model(m.name, m.kind, lm, tokenizer, data, prep, options))
            del lm
            gc.collect()
        else:  # lm-eval only
            all_scores.append(ModelScores(m.name, m.kind))
        timings[m.name] = time.perf_counter() - t0
        log.info("eval: %s scored in %.1f s", m.name, timings[m.name])
    harness = None
    if lm_eval is not None:
        t0 = time.perf_counter()
        harness = run_harness(models, ctx, tokenizer, dev, lm_eval, lambda m: load_eval_model(m, ctx, dev))
        log.info("lm-eval: done in %.1f s", time.perf_counter() - t0)
    if recorded is not None:
        models.append(EvalModel(RECORDED_NAME, "recorded", str(against)))
        _unique_names(models)
        timings[RECORDED_NAME] = 0.0
        all_scores.append(score_recorded(RECORDED_NAME, recorded[1], data, options))
        add_agreement(all_scores[0], recorded[1], data, options)
    notes = [note for s in all_scores for note in s.notes]
    if recorded is not None:
        notes += _against_notes(recorded, data, options)
    if data.pairs:
        reference = _reference_scores(all_scores, ctx, tokenizer, data, prep, options, dev)
        if reference is None:
            notes.append(
                "Implicit DPO reward accuracy needs the base model as reference; "
                "the base of this target is unknown."
            )
        else:
            for s in all_scores:
                add_implicit_reward(s, reference)
    rm_accuracy = None
    if reward_model:
        rm_accuracy = add_reward_model_scores(
            all_scores, data, _load_reward_model(reward_model, dev), tokenizer
        )

    rows = example_rows(data, all_scores)
    first = all_scores[0]
    report = {
        "title": f"Evaluation of {models[0].name} on {Path(data_path).name if data_path else ', '.join(lm_eval.tasks)}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "notes": notes,
        "settings": {
            "target": str(target),
            "data": str(data_path) if data_path else None,
            "examples": len(data.items),
            "pairs": len(data.pairs),
            "decoding": "greedy" if options.temperature == 0 else "sampling",
            "temperature": options.temperature,
            "top_p": options.top_p,
            "seed": options.seed,
            "max_new_tokens": options.max_new_tokens,
            "system": options.system,
            "bootstrap_resamples": options.n_resamples,
            "confidence": options.confidence,
            "device": str(dev),
            "against": None if recorded is None else {"path": str(against), "request": recorded[0].request},
            "graders": {g.name: _grader_setting(g, options.scoring.judge) for g in options.scoring.graders},
        },
        "models": [
            {
                "name": m.name,
                "kind": m.kind,
                "path": m.adapter or m.checkpoint or m.path,
                "seconds": round(timings[m.name], 2),
            }
            for m in models
        ],
        "metrics": {s.name: summarize(s, options) for s in all_scores},
        "comparisons": [
            {"model": first.name, "baseline": s.name, "metrics": compare(first, s, options)}
            for s in all_scores[1:]
        ],
        "examples": rows,
        "highlights": [
            {"model": first.name, "baseline": s.name, **highlights(rows, first.name, s.name)}
            for s in all_scores[1:]
        ],
        "training": training_curves(ctx.run_dir),
    }
    if rm_accuracy is not None:
        report["reward_model"] = {"path": reward_model, "pairwise_accuracy": rm_accuracy}
        report["notes"].append(
            f"Reward model {reward_model}: pairwise accuracy "
            f"{rm_accuracy['value']:.3f} [{rm_accuracy['low']:.3f}, {rm_accuracy['high']:.3f}] "
            f"on {rm_accuracy['n']} pairs."
        )
    if harness is not None:
        per_model, commands = harness
        add_to_report(report, per_model, options, lm_eval, commands)
    out = Path(out_dir) if out_dir else (ctx.run_dir / "eval" if ctx.run_dir else Path("eval"))
    write_report(report, out)
    _write_predictions(out / "predictions.jsonl", rows)
    report["out_dir"] = str(out)
    return report


def _read_against(
    against: str | None, data, data_path: str, options: EvalOptions
) -> tuple[RecordedFile, list] | None:
    """``--against``: the recorded file and each item's recorded answer (None: none), checked
    against the held-out rows before any model loads."""
    if against is None:
        return None
    if not options.generate:
        raise ConfigError("--against compares generated answers with the recorded ones; drop --no-generate")
    recorded = read_recorded(against)
    answers = match_answers(recorded, data.items, str(data_path))
    if not any(a is not None for a in answers):
        raise ConfigError(f"--against {against}: it holds no answer for any row of {data_path}")
    return recorded, answers


def _against_notes(recorded: tuple[RecordedFile, list], data, options: EvalOptions) -> list[str]:
    """What a reader of the comparison should know: rows without a recorded answer, and
    decoding settings that differ from the recording's."""
    rec, answers = recorded
    notes = []
    have = sum(a is not None for a in answers)
    if have < len(data.items):
        notes.append(
            f"{rec.path} has recorded answers for {have} of {len(data.items)} rows; the "
            "comparison with 'recorded' uses those rows only."
        )
    req = rec.request
    mine = {"temperature": options.temperature, "max_tokens": options.max_new_tokens}
    differ = [f"{k} {req[k]!r} (here {v!r})" for k, v in mine.items() if k in req and req[k] != v]
    if differ:
        notes.append(
            f"The recorded answers were sampled with {', '.join(differ)}; pass the same "
            "settings (--temperature, --max-new-tokens) for a like-for-like comparison."
        )
    return notes


def _load_judge(options: EvalOptions) -> None:
    """Load the graders' judge models before any model is scored, so a judge that cannot load
    fails the command instead of zeroing every grade."""
    judge = options.scoring.judge
    if judge is not None and options.generate and hasattr(judge, "load"):
        from ..errors import TunesmithError

        try:
            judge.load()
        except TunesmithError as exc:
            raise ConfigError(f"--judge-model: cannot load the judge: {exc}") from None


def _grader_setting(grader, judge) -> dict:
    from ..graders.judge import model_graders

    setting = {"type": grader.spec.type}
    models = {m.model for _, m in model_graders(grader.spec)}
    if models:
        paths = getattr(judge, "models", {})
        setting["judges"] = {m: paths.get(m) for m in sorted(models)}
    return setting


def _unique_names(models: list[EvalModel]) -> None:
    seen = set()
    for m in models:
        if m.name in seen:
            raise ConfigError(f"model '{m.name}' is named twice; compare different models")
        seen.add(m.name)


def _config_eval_file(ctx, required: bool = True):
    """The run's first held-out source: its path, or the DataSource when it renames columns
    or names a split (both read by tunesmith.data.readers.iter_rows); None when there is none
    and it is not ``required``."""
    if ctx.config is not None and ctx.config.data.eval:
        from ..config.schema import as_sources

        first = as_sources(ctx.config.data.eval)[0]
        return first.path if not first.columns and first.split is None else first
    if not required:
        return None
    raise ConfigError("no held-out data: pass --data FILE (the target names no data.eval)")


def _reference_scores(all_scores, ctx, tokenizer, data, prep, options, dev):
    """The base model's pair log-probs (the implicit reward's reference), reusing the base's
    scores when it was evaluated, else loading it for the pairs only."""
    for s in all_scores:
        if s.kind == "base":
            return s
    if not ctx.base:
        return None
    from dataclasses import replace

    lm = load_eval_model(EvalModel("base", "base", ctx.base), ctx, dev)
    quick = replace(options, generate=False, likelihood=False)
    ref = score_model("base", "base", lm, tokenizer, data, prep, quick)
    del lm
    gc.collect()
    return ref


def _load_reward_model(path: str, dev: torch.device):
    try:
        from ..models.reward_model import load_reward_model
    except ImportError:
        raise ConfigError(
            "--reward-model needs tunesmith.models.reward_model, which this installation does not have"
        ) from None
    return load_reward_model(path, device=str(dev))


def _write_predictions(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")
