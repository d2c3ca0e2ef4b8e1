"""Score models on one held-out set and compare them: the engine of ``tunesmith eval``.

For every model the runner collects *per-example* values of every metric (a series aligned
with the data), then aggregates each series (weighted mean, bootstrap interval) and compares
the first model with each other one (paired bootstrap interval of the difference, win / tie /
loss per example). See :mod:`.stats` for the statistics and :mod:`.scorers` for the metrics.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from ..data.render import Renderer
from ..models.generate import generate_ids, prompt_token_ids
from ..progress import TaskProgress
from .data import EvalData, pair_examples
from .likelihood import example_losses
from .scorers import GENERATION_METRICS, ScoringOptions, grade_replies, score_prediction
from .stats import bootstrap_ci, paired_bootstrap, safe_exp, win_tie_loss

log = logging.getLogger("tunesmith")

# metric -> (label, higher is better); generation metrics come from the scorers.
METRICS = {
    "loss": ("loss (nats/token)", False),
    "perplexity": ("perplexity", False),
    "token_accuracy": ("token accuracy", True),
    **GENERATION_METRICS,
    "logp_pref_accuracy": ("preference accuracy (log p chosen > rejected)", True),
    "reward_accuracy": ("implicit DPO reward accuracy", True),
    "reward_margin": ("implicit reward margin (log-ratio, β=1)", True),
    "rm_score": ("reward-model score of the reply", True),
    # the engine's held-out numbers, as the end-of-run report shows them
    "eval_loss": ("eval loss (nats/token)", False),
    "eval_ppl": ("eval perplexity", False),
    "eval_accuracy": ("eval token accuracy", True),
}
# Which metric picks the examples shown as largest improvements / regressions (first present).
HIGHLIGHT_ORDER = (
    "keywords",
    "json_schema_valid",
    "regex",
    "rouge_l",
    "token_f1",
    "exact_match",
    "json_valid",
    "loss",
)


# Reference scorers that also measure agreement with a recorded answer (``agree:<metric>``).
AGREEMENT_METRICS = ("exact_match", "token_f1", "rouge_l")


# lm-evaluation-harness metrics (``lm-eval:<task>:<metric>[,<filter>]``, eval/harness.py) where
# lower is better; every other lm-eval metric is higher-is-better.
LM_EVAL_LOWER_IS_BETTER = ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "ter")


def metric_info(name: str) -> tuple[str, bool]:
    if name.startswith("lm-eval:"):
        return name, name.rpartition(":")[2].partition(",")[0] not in LM_EVAL_LOWER_IS_BETTER
    if name.startswith("agree:"):
        return f"{metric_info(name[6:])[0]} vs recorded answer", True
    if name.startswith("scorer:"):
        return f"scorer {name[7:]}", True
    if name.startswith("grader:"):
        return f"grader {name[7:]}", True
    return METRICS.get(name, (name, True))


@dataclass
class EvalOptions:
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 8
    max_length: int = 1024
    likelihood: bool = True
    generate: bool = True
    system: str | None = None
    scoring: ScoringOptions = field(default_factory=ScoringOptions)
    n_resamples: int = 2000
    confidence: float = 0.95


@dataclass
class Series:
    """Per-example values of one metric (None where it does not apply) and optional weights."""

    values: list
    weights: list | None = None
    transform: object = None


@dataclass
class ModelScores:
    name: str
    kind: str
    series: dict[str, Series] = field(default_factory=dict)
    predictions: list[dict | None] = field(default_factory=list)
    pair_logps: list[tuple[float, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Prepared:
    """The data rendered once for every model: likelihood renderings, prompt ids, pair renderings."""

    def __init__(self, data: EvalData, tokenizer, options: EvalOptions):
        renderer = Renderer(
            tokenizer, max_length=options.max_length, template_name="the evaluation tokenizer"
        )
        with_example = [i for i, it in enumerate(data.items) if it.example is not None]
        rendered = renderer.render_many([data.items[i].example for i in with_example]) if with_example else []
        self.rendered = [None] * len(data.items)
        for i, r in zip(with_example, rendered):
            self.rendered[i] = r
        self.prompts = [
            None
            if it.prompt is None
            else prompt_token_ids(
                tokenizer,
                it.prompt,
                options.system,
                templated=not isinstance(it.prompt, str) or it.example is None,
            )
            for it in data.items
        ]
        self.pairs = []
        for pair in data.pairs:
            self.pairs.extend(renderer.render_many(list(pair_examples(pair))))


def score_model(
    name: str, kind: str, model, tokenizer, data: EvalData, prep: Prepared, options: EvalOptions
) -> ModelScores:
    """Every per-example series for one loaded model."""
    scores = ModelScores(name, kind)
    n = len(data.items)
    if options.likelihood and any(r is not None for r in prep.rendered):
        idx = [i for i, r in enumerate(prep.rendered) if r is not None]
        with TaskProgress(f"{name}: scoring held-out loss", len(idx), "examples") as bar:
            losses = example_losses(
                model, [prep.rendered[i] for i in idx], chunk_size=1024, progress=bar.advance
            )
        per = [None] * n
        for i, value in zip(idx, losses):
            per[i] = value
        weights = [p["n_tokens"] if p else 0 for p in per]
        mean_loss = [p["loss_sum"] / p["n_tokens"] if p else None for p in per]
        scores.series["loss"] = Series(mean_loss, weights)
        scores.series["perplexity"] = Series(mean_loss, weights, safe_exp)
        scores.series["token_accuracy"] = Series(
            [p["correct"] / p["n_tokens"] if p else None for p in per], weights
        )
    gen_idx = [i for i, p in enumerate(prep.prompts) if p is not None]
    scores.predictions = [None] * n
    if options.generate and gen_idx:
        with TaskProgress(f"{name}: generating replies", len(gen_idx), "prompts") as bar:
            replies = generate_ids(
                model,
                tokenizer,
                [prep.prompts[i] for i in gen_idx],
                max_new_tokens=options.max_new_tokens,
                temperature=options.temperature,
                top_p=options.top_p,
                seed=options.seed,
                batch_size=options.batch_size,
                progress=bar.advance,
            )
        _score_replies(scores, data, gen_idx, replies, options)
    if prep.pairs:
        losses = example_losses(model, prep.pairs)
        # log p(continuation | prompt) = -(summed CE of its tokens); chosen / rejected alternate.
        logps = [-(x["loss_sum"]) if x else float("nan") for x in losses]
        scores.pair_logps = list(zip(logps[0::2], logps[1::2]))
        scores.series["logp_pref_accuracy"] = Series([float(c > r) for c, r in scores.pair_logps])
    return scores


def _score_replies(
    scores: ModelScores, data: EvalData, gen_idx: list[int], replies: list[dict], options: EvalOptions
) -> None:
    """Every generation metric (scorers, then graders) of ``replies[k]`` (a dict with ``text``),
    the reply to item ``gen_idx[k]``: fills ``scores.predictions`` and ``scores.series``."""
    n = len(data.items)
    per_metric: dict[str, list] = {}
    for i, reply in zip(gen_idx, replies):
        values = score_prediction(reply["text"], data.items[i].target, options.scoring)
        scores.predictions[i] = {**reply, "scores": values}
        for metric, value in values.items():
            per_metric.setdefault(metric, [None] * n)[i] = value
    if options.scoring.graders and gen_idx:
        _add_grader_scores(scores, per_metric, data, gen_idx, [r["text"] for r in replies], options.scoring)
    for metric, values in per_metric.items():
        scores.series[metric] = Series(values)


def score_recorded(name: str, answers: list[str | None], data: EvalData, options: EvalOptions) -> ModelScores:
    """A model whose replies were recorded (``answers[i]`` for item ``i``, None where none was),
    scored by the same scorers and graders as a generated reply; kind ``recorded``. It has no
    likelihood metrics: there is no model to ask for log-probabilities."""
    scores = ModelScores(name, "recorded")
    scores.predictions = [None] * len(data.items)
    idx = [i for i, a in enumerate(answers) if a is not None and data.items[i].prompt is not None]
    _score_replies(scores, data, idx, [{"text": answers[i], "recorded": True} for i in idx], options)
    return scores


def add_agreement(
    scores: ModelScores, answers: list[str | None], data: EvalData, options: EvalOptions
) -> None:
    """``agree:<metric>``: how close each of ``scores``' replies is to the recorded answer
    (``answers[i]``), with the recorded answer as the reference: the reference scorers of
    :data:`AGREEMENT_METRICS`, and every ``--grader`` that reads ``{{item.reference}}`` (the
    item's ``reference`` replaced by the recorded answer). Rows without either are skipped."""
    from ..graders import item_keys

    n = len(data.items)
    idx = [i for i, p in enumerate(scores.predictions) if p is not None and answers[i] is not None]
    per: dict[str, list] = {}
    for i in idx:
        values = score_prediction(scores.predictions[i]["text"], {"reference": answers[i]}, ScoringOptions())
        for metric in AGREEMENT_METRICS:
            if metric in values:
                per.setdefault(f"agree:{metric}", [None] * n)[i] = values[metric]
    graders = [g for g in options.scoring.graders if "reference" in item_keys(g.spec)]
    if graders and idx:
        items = [{**data.items[i].grader_item(), "reference": answers[i]} for i in idx]
        texts = [scores.predictions[i]["text"] for i in idx]
        for name, results in grade_replies(graders, texts, items, options.scoring.judge).items():
            values = per.setdefault(f"agree:grader:{name}", [None] * n)
            for i, result in zip(idx, results):
                values[i] = result.score
            failed = sum(r.error is not None for r in results)
            if failed:
                scores.notes.append(
                    f"{scores.name}: grader {name} could not grade {failed} of "
                    f"{len(results)} answers against the recorded ones (scored 0)"
                )
    for metric, values in per.items():
        scores.series[metric] = Series(values)


def _add_grader_scores(
    scores: ModelScores,
    per_metric: dict,
    data: EvalData,
    gen_idx: list[int],
    texts: list[str],
    scoring: ScoringOptions,
) -> None:
    """``grader:<name>`` for every generated reply (one batch per grader). A reply the grader
    could not grade scores 0 (OpenAI's rule); its error is kept with the prediction and the
    count goes into the report's notes."""
    n = len(data.items)
    items = [data.items[i].grader_item() for i in gen_idx]
    graded = {}
    with TaskProgress(f"{scores.name}: grading replies", len(scoring.graders), "graders") as bar:
        for grader in scoring.graders:  # one at a time, so that the progress names each
            graded.update(grade_replies([grader], texts, items, scoring.judge))
            bar.advance()
    for name, results in graded.items():
        metric = f"grader:{name}"
        values = per_metric.setdefault(metric, [None] * n)
        failed = []
        for i, result in zip(gen_idx, results):
            values[i] = result.score
            prediction = scores.predictions[i]
            prediction["scores"][metric] = result.score
            if result.error is not None:
                prediction.setdefault("grader_errors", {})[name] = result.error
                failed.append((data.items[i].source, result.error))
        if failed:
            note = (
                f"{scores.name}: grader {name} could not grade {len(failed)} of {len(results)} "
                f"answers (scored 0); first: {failed[0][0]}: {failed[0][1]}"
            )
            scores.notes.append(note)
            log.warning("eval: %s", note)


def add_implicit_reward(scores: ModelScores, reference: ModelScores) -> None:
    """Implicit DPO reward (Rafailov et al. 2023, eq. 5, with β = 1):
    ``r(x, y) = log π(y|x) - log π_ref(y|x)``; a pair is ranked right when
    ``r(x, y_chosen) > r(x, y_rejected)``. The reference is the base model."""
    if not scores.pair_logps or scores is reference:
        return
    margins = [(c - rc) - (r - rr) for (c, r), (rc, rr) in zip(scores.pair_logps, reference.pair_logps)]
    scores.series["reward_margin"] = Series(margins)
    scores.series["reward_accuracy"] = Series([float(m > 0) for m in margins])


def add_reward_model_scores(
    all_scores: list[ModelScores], data: EvalData, reward_model, tokenizer
) -> dict | None:
    """Explicit reward model: the score of each model's replies (``rm_score``) and the reward
    model's own pairwise accuracy on preference pairs (returned, it does not depend on the
    evaluated models)."""
    from ..models.reward_model import score as rm_score

    rm, rm_tok = reward_model
    for s in all_scores:
        idx = [i for i, p in enumerate(s.predictions) if p is not None]
        if not idx:
            continue
        convs = [
            _as_messages(data.items[i].prompt) + [{"role": "assistant", "content": s.predictions[i]["text"]}]
            for i in idx
        ]
        values = [None] * len(s.predictions)
        for i, v in zip(idx, rm_score(rm, rm_tok, convs)):
            values[i] = float(v)
        s.series["rm_score"] = Series(values)
    if not data.pairs:
        return None
    chosen = rm_score(rm, rm_tok, [p.prompt + p.chosen for p in data.pairs])
    rejected = rm_score(rm, rm_tok, [p.prompt + p.rejected for p in data.pairs])
    correct = [float(c > r) for c, r in zip(chosen, rejected)]
    return bootstrap_ci(correct)


def _as_messages(prompt) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


# ---- aggregation and comparison ---------------------------------------------------------------


def _present(series: Series) -> tuple[list[int], list[float], list[float] | None]:
    idx = [
        i
        for i, v in enumerate(series.values)
        if v is not None and not (isinstance(v, float) and math.isnan(v))
    ]
    weights = None if series.weights is None else [series.weights[i] for i in idx]
    return idx, [series.values[i] for i in idx], weights


def _resampling(series: Series, options: EvalOptions) -> dict:
    """The bootstrap keywords of one metric: its transform and the run's resampling settings."""
    return {
        "transform": series.transform,
        "n_resamples": options.n_resamples,
        "confidence": options.confidence,
        "seed": options.seed,
    }


def summarize(scores: ModelScores, options: EvalOptions) -> dict:
    """metric -> {"value", "low", "high", "n"} for one model."""
    out = {}
    for metric, series in scores.series.items():
        _, values, weights = _present(series)
        if values:
            out[metric] = bootstrap_ci(values, weights=weights, **_resampling(series, options))
    return out


def compare(a: ModelScores, b: ModelScores, options: EvalOptions) -> dict:
    """metric -> paired difference ``a - b`` with interval and win/tie/loss (a's view)."""
    out = {}
    for metric, sa in a.series.items():
        sb = b.series.get(metric)
        if sb is None:
            continue
        idx = [i for i in _present(sa)[0] if i < len(sb.values) and sb.values[i] is not None]
        if not idx:
            continue
        va, vb = [sa.values[i] for i in idx], [sb.values[i] for i in idx]
        weights = None if sa.weights is None else [sa.weights[i] for i in idx]
        res = paired_bootstrap(va, vb, weights=weights, **_resampling(sa, options))
        res.update(win_tie_loss(va, vb, higher_is_better=metric_info(metric)[1]))
        out[metric] = res
    return out


def example_rows(data: EvalData, all_scores: list[ModelScores]) -> list[dict]:
    """One row per generation / likelihood example: prompt, reference, each model's reply and scores."""
    rows = []
    for i, item in enumerate(data.items):
        row = {
            "source": item.source,
            "prompt": _prompt_text(item.prompt),
            "reference": item.target.get("reference"),
            "answers": {},
            "scores": {},
        }
        for s in all_scores:
            pred = s.predictions[i] if i < len(s.predictions) else None
            if pred is not None:
                row["answers"][s.name] = pred["text"]
                if pred.get("grader_errors"):
                    row.setdefault("grader_errors", {})[s.name] = pred["grader_errors"]
            # Transformed series (perplexity) are aggregate-only: their per-example value is the loss.
            row["scores"][s.name] = {
                m: ser.values[i]
                for m, ser in s.series.items()
                if ser.transform is None and i < len(ser.values) and ser.values[i] is not None
            }
        rows.append(row)
    return rows


def _prompt_text(prompt) -> str | None:
    if prompt is None or isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m.get('content') or ''}" for m in prompt)


_LIKELIHOOD = (
    "loss",
    "perplexity",
    "token_accuracy",
    "logp_pref_accuracy",
    "reward_margin",
    "reward_accuracy",
)


def _per_example_metrics(rows: list[dict], a: str, b: str) -> list[str]:
    """Metrics both models have on some row: :data:`HIGHLIGHT_ORDER` first (in its order), then
    user scorers, graders and the rest in order of appearance."""
    seen: list[str] = []
    for r in rows:
        sa, sb = r["scores"].get(a, {}), r["scores"].get(b, {})
        seen += [m for m in sa if m in sb and m not in seen]
    preferred = [m for m in HIGHLIGHT_ORDER if m in seen]
    return preferred + [m for m in seen if m not in preferred]


def highlights(rows: list[dict], a: str, b: str, k: int = 5) -> dict:
    """The ``k`` examples where ``a`` gained most over ``b`` and the ``k`` where it lost most, by
    the per-example reply metric that *changed on most examples* (ties: the earlier in
    :data:`HIGHLIGHT_ORDER`; likelihood metrics only when no reply metric changed; equal gains
    ordered by ROUGE-L, then loss). Ranking by a fixed first
    metric would pick one that is zero for both models everywhere (keywords on data without
    keywords) and show no change while ROUGE-L moved on nearly every example. ``changed`` /
    ``compared``: how many examples the chosen metric changed on, of those both models have."""
    candidates = _per_example_metrics(rows, a, b)
    if not candidates:
        return {"metric": None, "improvements": [], "regressions": []}

    def changed(m: str) -> tuple[int, int]:
        pairs = [
            (r["scores"][a][m], r["scores"][b][m])
            for r in rows
            if m in r["scores"].get(a, {}) and m in r["scores"].get(b, {})
        ]
        return sum(1 for x, y in pairs if x != y), len(pairs)

    counts = {m: changed(m) for m in candidates}
    # Continuous likelihood numbers change on every example by a hair, so they only rank when no
    # reply-level metric changed at all.
    replies = [m for m in candidates if m not in _LIKELIHOOD]
    pool = replies if any(counts[m][0] for m in replies) else candidates
    metric = max(pool, key=lambda m: (counts[m][0], -candidates.index(m)))
    sign = 1.0 if metric_info(metric)[1] else -1.0

    def delta(r, m):
        sa, sb = r["scores"].get(a, {}), r["scores"].get(b, {})
        if m not in sa or m not in sb:
            return 0.0
        return (sa[m] - sb[m]) * (1.0 if metric_info(m)[1] else -1.0)

    scored = [
        (sign * (r["scores"][a][metric] - r["scores"][b][metric]), delta(r, "rouge_l"), delta(r, "loss"), i)
        for i, r in enumerate(rows)
        if metric in r["scores"].get(a, {}) and metric in r["scores"].get(b, {})
    ]
    # Membership by the ranking metric alone (agrees with its win/tie/loss); the others only order.
    best = sorted((s for s in scored if s[0] > 0), reverse=True)[:k]
    worst = sorted(s for s in scored if s[0] < 0)[:k]
    return {
        "metric": metric,
        "improvements": [s[3] for s in best],
        "regressions": [s[3] for s in worst],
        "changed": counts[metric][0],
        "compared": counts[metric][1],
    }
