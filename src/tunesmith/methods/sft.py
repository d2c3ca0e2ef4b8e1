"""Supervised fine-tuning (``method: sft``) and continued pretraining (``method: pretrain``).

SFT trains on the assistant turns of chats (or completions); pretraining on every token of raw
text, with documents longer than ``max_length`` split into consecutive windows rather than
truncated. Both share the loss: summed token cross-entropy at the supervised positions.
"""

from __future__ import annotations

import logging
from functools import partial

from ..config import RunConfig
from ..data.collate import collate
from ..data.render import Rendered
from ..models.forward import token_loss
from .common import MethodParts, PreparedData, check_rendered, pack_prepared, render_examples

log = logging.getLogger("tunesmith")


def split_windows(items: list[Rendered], max_length: int) -> list[Rendered]:
    """Split long documents into consecutive windows of at most ``max_length`` tokens."""
    out = []
    for r in items:
        for s in range(0, len(r.input_ids), max_length):
            ids, mask = r.input_ids[s : s + max_length], r.loss_mask[s : s + max_length]
            if len(ids) > 1:
                out.append(Rendered(ids, mask, r.source))
    return out


def prepare_data(config: RunConfig, tokenizer) -> PreparedData:
    """Read, split, render and pack the train / eval data of an SFT or pretraining run."""
    t = config.train
    pretrain = config.method == "pretrain"
    train, evals, stats, eval_stats = render_examples(
        config,
        tokenizer,
        max_length=10**9 if pretrain else t.max_length,
        train_on_all_tokens=config.data.train_on_all_tokens or pretrain,
    )
    if pretrain:
        train, evals = split_windows(train, t.max_length), split_windows(evals, t.max_length)
    check_rendered(config, train, stats)
    if stats["dropped_no_targets"]:
        log.warning(
            "data: %d training examples had no trained token left and were dropped (e.g. %s)",
            stats["dropped_no_targets"],
            ", ".join(stats["dropped_sources"]),
        )
    return pack_prepared(train, evals, stats, eval_stats, packing=t.packing, max_length=t.max_length)


def build(config: RunConfig, model=None, tokenizer=None) -> MethodParts:
    """Summed token cross-entropy at the supervised positions, normalised by their count."""
    return MethodParts(
        loss_fn=partial(token_loss, chunk_size=config.train.loss_chunk_size),
        collate=collate,
        batch_count=lambda batch: batch.n_targets,
    )
