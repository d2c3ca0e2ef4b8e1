"""Evaluation inside a training run: ``train.eval_generate`` and the end-of-run report.

- :func:`attach_generation_eval` gives the trainer a hook that, at every evaluation, greedily
  answers the first N held-out prompts and logs the generation metrics beside ``eval_loss``
  (``eval_gen_exact_match``, ``eval_gen_rouge_l``, ``eval_gen_keywords`` …). Each reply is
  appended to ``RUN/eval_generations.jsonl`` with its step, so the report can compare the
  first evaluation (the untrained model when ``eval_at_start`` is on) with the last one
  example by example.
- :func:`write_run_report` writes ``RUN/report.html`` and ``RUN/report.json`` at the end of
  every run from ``metrics.jsonl`` and ``eval_generations.jsonl``: loss curves, the first and
  last evaluation side by side with paired bootstrap intervals for the generation metrics, and
  the largest per-example changes. It loads no model, so it costs well under a second.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

from ..data.formats import Where
from ..engine.loop import read_metrics
from ..models.generate import generate_ids, prompt_token_ids
from .data import sft_item
from .report import run_method, training_curves, write_report
from .runner import ModelScores, Series, compare, example_rows, highlights, summarize
from .scorers import ScoringOptions, score_prediction

log = logging.getLogger("tunesmith")
GENERATIONS = "eval_generations.jsonl"


def _where(source: str) -> Where:
    path, _, line = source.rpartition(":")
    return Where(path, int(line)) if line.isdigit() else Where(source, 0)


class GenerationEval:
    """The ``train.eval_generate`` hook: ``hook(model, step) -> {"eval_gen_<metric>": mean}``."""

    def __init__(
        self, items: list, tokenizer, out_dir: Path, *, batch_size: int, max_length: int, write: bool = True
    ):
        self.items = [it for it in items if it.prompt is not None]
        self.tokenizer = tokenizer
        self.path = Path(out_dir) / GENERATIONS
        self.batch_size, self.write = batch_size, write
        self.prompts = [
            prompt_token_ids(tokenizer, it.prompt, templated=not isinstance(it.prompt, str))
            for it in self.items
        ]
        # Replies need not be much longer than the references; 1.5x the longest plus slack.
        ref_lengths = [
            len(tokenizer.encode(it.target["reference"], add_special_tokens=False))
            for it in self.items
            if it.target.get("reference")
        ]
        longest = max(ref_lengths, default=85)
        self.max_new_tokens = max(8, min(max_length, int(1.5 * longest) + 8))

    def __call__(self, model, step: int | None) -> dict:
        if not self.items:
            return {}
        # generate_ids switches to eval mode and restores the training mode itself.
        replies = generate_ids(
            model,
            self.tokenizer,
            self.prompts,
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
        )
        rows, sums, counts = [], {}, {}
        for item, reply in zip(self.items, replies):
            scores = score_prediction(reply["text"], item.target, ScoringOptions())
            for k, v in scores.items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            rows.append(
                {
                    "step": step,
                    "source": item.source,
                    "prompt": item.prompt,
                    "reference": item.target.get("reference"),
                    "prediction": reply["text"],
                    "scores": scores,
                }
            )
        if self.write and step is not None:
            self._append(step, rows)
        return {f"eval_gen_{k}": sums[k] / counts[k] for k in sums}

    def _append(self, step: int, rows: list[dict]) -> None:
        """Replace any rows of this or a later step (left by a run we resumed) with ``rows``."""
        kept = []
        if self.path.is_file():
            kept = [
                line
                for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and (json.loads(line).get("step") or 0) < step
            ]
        text = "".join(line + "\n" for line in kept) + "".join(json.dumps(r) + "\n" for r in rows)
        self.path.write_text(text, encoding="utf-8")


def attach_generation_eval(trainer, cfg, tokenizer, out_dir: Path) -> None:
    """Give ``trainer`` the ``train.eval_generate`` hook over the run's first N held-out examples."""
    from ..methods.common import train_eval_examples

    dist = getattr(trainer, "dist", None)
    if dist is not None and getattr(dist, "active", False) and getattr(dist, "mode", "") == "fsdp":
        log.warning(
            "train.eval_generate is skipped under FSDP (generation needs whole weights); "
            "run tunesmith eval on the result instead"
        )
        return
    _, eval_examples = train_eval_examples(cfg, "sft")
    items = [sft_item(ex, _where(ex.source)) for ex in eval_examples[: cfg.train.eval_generate]]
    hook = GenerationEval(
        items,
        tokenizer,
        out_dir,
        batch_size=cfg.train.batch_size,
        max_length=cfg.train.max_length,
        write=getattr(dist, "is_main", True),
    )
    if not hook.items:
        log.warning("train.eval_generate: the held-out examples have no prompts to answer (raw text)")
        return
    trainer.eval_hook = hook
    log.info(
        "eval: generation metrics on %d held-out prompts at each evaluation (max %d new tokens)",
        len(hook.items),
        hook.max_new_tokens,
    )


# ---- end-of-run report ------------------------------------------------------------------------


def _generation_scores(out_dir: Path, step: int, name: str, order: list[str]) -> ModelScores | None:
    path = out_dir / GENERATIONS
    if not path.is_file():
        return None
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            if r.get("step") == step:
                rows[r["source"]] = r
    if not rows:
        return None
    scores = ModelScores(name, "checkpoint")
    metrics = sorted({m for r in rows.values() for m in r["scores"]})
    for m in metrics:
        scores.series[m] = Series([rows[s]["scores"].get(m) if s in rows else None for s in order])
    scores.predictions = [{"text": rows[s]["prediction"]} if s in rows else None for s in order]
    return scores


def run_report(out_dir: Path) -> dict | None:
    """The end-of-run report dict (see :mod:`.report`), or None when nothing was evaluated."""
    from .data import EvalData, EvalItem
    from .runner import EvalOptions

    out_dir = Path(out_dir)
    rows = read_metrics(out_dir)
    evals = [r for r in rows if "eval_loss" in r]
    training = training_curves(out_dir)
    if not rows:
        return None
    # The engine's held-out numbers, labelled as the run's method defines them (DPO's eval_loss
    # is a pair loss and its eval_accuracy a pair accuracy, not per-token quantities).
    spec = run_method(out_dir)
    loss_direction = False if spec is None or spec.loss_is_progress else None  # lower is better / none
    loss_label = (training or {}).get("loss_label", "loss")
    labels = {"eval_loss": [f"eval {loss_label}", loss_direction]}
    for sig in spec.signals if spec else ():
        labels[f"eval_{sig.key}"] = [f"eval {sig.label}", sig.higher_is_better]
    eval_keys = ["eval_loss", "eval_ppl", *[k for k in labels if k not in ("eval_loss", "eval_ppl")]]
    first, last = (evals[0], evals[-1]) if evals else (None, None)
    options = EvalOptions()
    names = []
    if first is not None:
        names = [f"step {last['step']}"] + ([f"step {first['step']}"] if first is not last else [])
    order, items = [], []
    path = out_dir / GENERATIONS
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                if r["source"] not in order:
                    order.append(r["source"])
                    items.append(EvalItem(r["source"], None, r["prompt"], {"reference": r["reference"]}))
    scores = []
    for name, ev in zip(names, [last, first]):
        s = _generation_scores(out_dir, ev["step"], name, order) or ModelScores(name, "checkpoint")
        scores.append(s)
    metrics = {}
    for s, ev in zip(scores, [last, first]):
        metrics[s.name] = summarize(s, options)
        for key in eval_keys:
            if isinstance(ev.get(key), (int, float)):
                metrics[s.name][key] = {
                    "value": ev[key],
                    "low": None,
                    "high": None,
                    "n": ev.get("eval_tokens"),
                }
    comparisons, hl, examples = [], [], []
    if len(scores) == 2:
        cmp = compare(scores[0], scores[1], options)
        for key in eval_keys:
            if isinstance(last.get(key), (int, float)) and isinstance(first.get(key), (int, float)):
                cmp[key] = {
                    "diff": last[key] - first[key],
                    "low": None,
                    "high": None,
                    "a": last[key],
                    "b": first[key],
                }
        comparisons = [{"model": scores[0].name, "baseline": scores[1].name, "metrics": cmp}]
        if order:
            examples = example_rows(EvalData(str(path), "generations", items), scores)
            hl = [
                {
                    "model": scores[0].name,
                    "baseline": scores[1].name,
                    **highlights(examples, scores[0].name, scores[1].name),
                }
            ]
    notes = (
        []
        if first is None
        else [
            f"Held-out evaluation at step {first['step']} and at step {last['step']}"
            + (" (step 0 is the model before training)." if first["step"] == 0 else ".")
            + _suggestion(spec, bool(order))
        ]
    )
    return {
        "title": f"Training report: {out_dir.name}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "notes": notes,
        "settings": {
            "run": str(out_dir),
            "steps": rows[-1].get("step"),
            "decoding": "greedy",
            "bootstrap_resamples": options.n_resamples,
            "confidence": options.confidence,
            "seed": options.seed,
        },
        "models": [{"name": s.name, "kind": "checkpoint", "path": str(out_dir)} for s in scores],
        "labels": labels,
        "metrics": metrics,
        "comparisons": comparisons,
        "examples": examples,
        "highlights": hl,
        "training": training,
    }


def _suggestion(spec, generated: bool) -> str:
    """What to run for more than the logged means: ``train.eval_generate`` only where it exists
    (SFT), ``tunesmith eval`` for the comparison with intervals."""
    if generated:
        return ""
    more = " Run tunesmith eval RUN --compare base for the comparison with intervals."
    if spec is not None and spec.name == "sft":
        return " Set train.eval_generate: N for generation metrics during training." + more
    return more


def write_run_report(out_dir: Path, trainer=None) -> Path | None:
    """Write ``RUN/report.html`` + ``report.json`` (main process only). A failure to write the
    report is logged, never raised: the trained model is already saved."""
    dist = getattr(trainer, "dist", None)
    if dist is not None and not getattr(dist, "is_main", True):
        return None
    try:
        report = run_report(Path(out_dir))
        if report is None:
            return None
        _, html_path = write_report(report, Path(out_dir))
    except Exception as exc:  # noqa: BLE001 - reporting must not fail a finished run
        log.warning("could not write the run report: %s: %s", type(exc).__name__, exc)
        return None
    log.info("report: %s", html_path)
    return html_path
