"""Preference tuning, ``method: dpo``: the DPO family on chosen / rejected pairs.

``preference.loss`` picks the objective (see :mod:`tunesmith.losses.preference`): sigmoid (DPO,
with ``label_smoothing`` conservative DPO), robust (rDPO), ipo, hinge, apo_zero — all against a
frozen reference — and the reference-free simpo and orpo. Which loss needs the reference and
which ``preference.*`` keys it reads is its entry in :data:`tunesmith.config.registry.LOSSES`.

Each pair is one row ``[prompt | chosen | rejected]`` in which the rejected answer attends to
the prompt but not to the chosen one (:mod:`tunesmith.data.pair_collate`), so the prompt is
encoded once per pair and nothing is padded. The reference model is, by default,

- for adapters: the same model with its adapters disabled (PEFT ``disable_adapter()``), one
  extra no-grad forward per step and no second copy in memory;
- for full fine-tuning: the initial weights, scored once before training and cached by content
  hash (:mod:`tunesmith.methods.reference`); ``precompute_reference: false`` keeps a frozen
  copy in memory instead.

The engine normalises by pairs: ``batch_count`` is the number of pairs in the batch.
Logged per step: loss, accuracy (chosen reward > rejected), margin, rewards and log-probs of
chosen and rejected answers (means over the pairs of the step).
"""

from __future__ import annotations

import logging

from ..config import RunConfig
from ..config.registry import method_loss
from ..data.preference import load_pairs, render_pairs
from ..losses import preference as preference_losses
from ..losses.preference import PairLogps
from ..models.pair_forward import sequence_logps
from .common import MethodParts, PreparedData
from .reference import batch_reference, finish_prepare, pair_parts, reference_source, render_split

log = logging.getLogger("tunesmith")


def prepare_data(config: RunConfig, tokenizer) -> PreparedData:
    """Read, split and render preference pairs; precompute reference log-probs if wanted."""
    train, evals, stats, eval_stats = render_split(config, tokenizer, load_pairs, render_pairs)
    if stats["identical"]:
        log.warning(
            "data: %d training pairs have identical chosen and rejected answers (they "
            "carry no preference signal)",
            stats["identical"],
        )
    return finish_prepare(config, train, evals, stats, eval_stats)


def loss_function(name: str):
    """The pair loss registered as ``name``: ``tunesmith.losses.preference.<name>_loss``."""
    return getattr(preference_losses, f"{name}_loss")


def build(config: RunConfig, model=None, tokenizer=None) -> MethodParts:
    spec = method_loss(config)
    loss, chunk = loss_function(spec.name), config.train.loss_chunk_size
    params = {key: getattr(config.preference, key) for key in spec.params}  # beta resolved (config.resolve)
    ref_model = reference_source(config, model) if model is not None else None

    def loss_fn(model, batch):
        logps = sequence_logps(model, batch, chunk)
        pair = PairLogps(
            logps[0::2],
            logps[1::2],
            chosen_tokens=batch.answer_tokens[0::2],
            rejected_tokens=batch.answer_tokens[1::2],
        )
        if spec.needs_reference:
            ref = batch_reference(model, batch, chunk, ref_model)
            pair.ref_chosen, pair.ref_rejected = ref[0::2], ref[1::2]
        return loss(pair, **params)

    return pair_parts(loss_fn)
