"""KTO, ``method: kto``: preference tuning from unpaired desirable / undesirable examples.

Kahneman–Tversky Optimisation (Ethayarajh et al. 2024): each example is a prompt, a completion
and a label; the loss (:func:`tunesmith.losses.preference.kto_loss`) compares the implicit
reward ``r = log π(y|x) − log π_ref(y|x)`` with a reference point ``z₀``, the KL divergence of
policy from reference estimated — as in the paper (§4.1) — from *mismatched* pairs: example
i's prompt with example i+1's completion (fixed when the data is rendered). Per forward pass
``z₀ = max(0, mean_i [log π(y'_i|x_i) − log π_ref(y'_i|x_i)])``, detached (no gradient flows
through the reference point, as in the paper and TRL).

Each row is ``[prompt | completion | mismatched completion]`` with the shared-prompt attention
(:mod:`tunesmith.data.pair_collate`), so the KL estimate costs no extra prompt encoding. The
reference model is handled as for DPO (:mod:`tunesmith.methods.reference`). Logged: loss,
accuracy (desirable above / undesirable below the reference point), kl, mean rewards of
desirable and undesirable examples.
"""

from __future__ import annotations

import logging

from ..config import RunConfig
from ..config.registry import method_loss
from ..data.preference import load_unpaired, render_unpaired
from ..losses.preference import kto_loss
from ..models.pair_forward import sequence_logps
from .common import MethodParts, PreparedData
from .reference import batch_reference, finish_prepare, pair_parts, reference_source, render_split

log = logging.getLogger("tunesmith")


def prepare_data(config: RunConfig, tokenizer) -> PreparedData:
    train, evals, stats, eval_stats = render_split(config, tokenizer, load_unpaired, render_unpaired)
    if not evals:
        eval_stats = {}  # KTO runs without held-out rows have always recorded no eval stats
    if not stats["desirable"] or not stats["undesirable"]:
        log.warning(
            "data: KTO training data has %d desirable and %d undesirable examples; it learns best from both",
            stats["desirable"],
            stats["undesirable"],
        )
    return finish_prepare(config, train, evals, stats, eval_stats)


def summarize(sums: dict, n: int) -> dict:
    """Means per example, rewards per label (over that label's examples)."""
    out = {
        "accuracy": sums.get("correct", 0.0) / max(n, 1),
        "kl": sums.get("kl", 0.0) / max(n, 1),
        "logps": sums.get("logps", 0.0) / max(n, 1),
    }
    for label in ("desirable", "undesirable"):
        count = sums.get(f"n_{label}", 0.0)
        if count:
            out[f"rewards_{label}"] = sums[f"rewards_{label}"] / count
    return out


def build(config: RunConfig, model=None, tokenizer=None) -> MethodParts:
    params = {key: getattr(config.preference, key) for key in method_loss(config).params}
    chunk = config.train.loss_chunk_size
    ref_model = reference_source(config, model) if model is not None else None

    def loss_fn(model, batch):
        logps = sequence_logps(model, batch, chunk)
        ref = batch_reference(model, batch, chunk, ref_model)
        kl = (logps[1::2].detach() - ref[1::2]).mean()
        loss, metrics = kto_loss(logps[0::2], ref[0::2], batch.labels, kl, **params)
        metrics["kl"] = kl * batch.n_items  # summed, so that the mean over the step is per example
        return loss, metrics

    return pair_parts(loss_fn, summarize=summarize)
