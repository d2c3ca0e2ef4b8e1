"""Supervised fine-tuning (``method: sft``) and continued pretraining (``method: pretrain``).

SFT trains on the assistant turns of chats (or completions); pretraining on every token of raw
text, with documents longer than ``max_length`` split into consecutive windows rather than
truncated. Both share the loss: summed token cross-entropy at the supervised positions.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from functools import partial

from ..config import RunConfig
from ..data.collate import collate
from ..data.formats import load_examples
from ..data.pack import make_units
from ..data.render import Rendered, Renderer, render_all
from ..errors import DataError
from ..models.forward import token_loss

log = logging.getLogger("tunesmith")


@dataclass
class PreparedData:
    train: list[Rendered]
    eval: list[Rendered]
    train_units: list[list[int]]
    eval_units: list[list[int]]
    stats: dict


def data_files(value) -> list[str]:
    """``data.train`` / ``data.eval`` as a list of paths (a single path, a list, or None)."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _load(paths: list[str], expect: str):
    examples = []
    for p in paths:
        examples.extend(load_examples(p, expect=expect))
    return examples


def split_eval(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """Deterministically hold out ``ceil(fraction * n)`` examples (none if fewer than 2)."""
    if fraction <= 0 or len(examples) < 2:
        return examples, []
    order = list(range(len(examples)))
    random.Random(f"eval-split:{seed}").shuffle(order)
    n_eval = min(len(examples) - 1, max(1, round(fraction * len(examples))))
    held = set(order[:n_eval])
    return ([e for i, e in enumerate(examples) if i not in held],
            [e for i, e in enumerate(examples) if i in held])


def split_windows(items: list[Rendered], max_length: int) -> list[Rendered]:
    """Split long documents into consecutive windows of at most ``max_length`` tokens."""
    out = []
    for r in items:
        for s in range(0, len(r.input_ids), max_length):
            ids, mask = r.input_ids[s:s + max_length], r.loss_mask[s:s + max_length]
            if len(ids) > 1:
                out.append(Rendered(ids, mask, r.source))
    return out


def prepare_data(config: RunConfig, tokenizer) -> PreparedData:
    """Read, split, render and pack the train / eval data of an SFT or pretraining run."""
    t = config.train
    expect = "pretrain" if config.method == "pretrain" else "sft"
    train_ex = _load(data_files(config.data.train), expect)
    eval_ex = _load(data_files(config.data.eval), expect)
    if not eval_ex:
        train_ex, eval_ex = split_eval(train_ex, config.data.eval_fraction, t.seed)
    if config.data.max_eval_examples is not None:
        eval_ex = eval_ex[: config.data.max_eval_examples]
    pretrain = config.method == "pretrain"
    renderer = Renderer(tokenizer, max_length=10**9 if pretrain else t.max_length,
                        train_on_all_tokens=config.data.train_on_all_tokens or pretrain,
                        template_name=config.model.chat_template or config.model.tokenizer or config.model.path)
    train, stats = render_all(renderer, train_ex)
    evals, eval_stats = render_all(renderer, eval_ex)
    if pretrain:
        train, evals = split_windows(train, t.max_length), split_windows(evals, t.max_length)
    if not train:
        raise DataError(f"no trainable example in {config.data.train}: every example was empty or "
                        "had no assistant tokens to train on")
    if stats["truncated"]:
        log.warning("data: %d of %d training examples were longer than train.max_length=%d and "
                    "were truncated from the end", stats["truncated"], stats["examples"], t.max_length)
    if stats["dropped_no_targets"]:
        log.warning("data: %d training examples had no trained token left and were dropped (e.g. %s)",
                    stats["dropped_no_targets"], ", ".join(stats["dropped_sources"]))
    train_units = make_units([len(r.input_ids) for r in train], packing=t.packing, max_length=t.max_length)
    eval_units = make_units([len(r.input_ids) for r in evals], packing=t.packing, max_length=t.max_length)
    stats = {"train": stats, "eval": eval_stats, "train_rows": len(train_units),
             "train_sequences": len(train), "eval_sequences": len(evals)}
    return PreparedData(train, evals, train_units, eval_units, stats)


def make_loss_fn(config: RunConfig):
    """``(model, batch) -> (loss_sum, metrics)`` for SFT / pretraining."""
    return partial(token_loss, chunk_size=config.train.loss_chunk_size)


def batch_count(batch) -> int:
    """What the loss is normalised by: supervised tokens."""
    return batch.n_targets


COLLATE = collate
