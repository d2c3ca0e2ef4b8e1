"""What every method shares: the method protocol, the prepared-data record, file, render and pack helpers.

A method is a module in :mod:`tunesmith.methods` with

- ``prepare_data(cfg, tokenizer) -> PreparedData``: read, validate, render and group the
  train / eval data into items and units (lists of item indices a micro-batch slot holds);
  ``cfg`` is resolved as far as the device (:mod:`tunesmith.config.resolve`: ``auto``
  hyperparameters are chosen only after the data is read);
- ``build(cfg, model, tokenizer) -> MethodParts``: the loss function and collation the engine
  drives, for the resolved ``cfg`` (``preference.beta`` a number, device and dtype named);
- optionally ``load_model(cfg, device) -> nn.Module`` when the default causal LM is not the
  model to train (e.g. a reward model with a scalar head);
- optionally ``validate_config(cfg)``: config checks that need more than the torch-free config
  layer may import (run by :func:`tunesmith.methods.validate` before anything is loaded).

What a method *declares* — its name, data formats, config sections and losses — is its entry
in :mod:`tunesmith.config.registry` (see docs/contributing.md).

Methods never import one another (DESIGN.md principle 2); what they share lives here, in
``data/``, ``models/`` and ``losses/``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..data.formats import load_examples
from ..data.pack import make_units
from ..data.render import Renderer, render_all
from ..engine.parts import MethodParts, mean_per_unit  # noqa: F401  (re-exported for methods)
from ..errors import DataError

log = logging.getLogger("tunesmith")


@dataclass
class PreparedData:
    """Rendered items and the units the engine batches over."""

    train: list
    eval: list
    train_units: list[list[int]]
    eval_units: list[list[int]]
    stats: dict


def data_files(value) -> list[str]:
    """``data.train`` / ``data.eval`` as a list of paths (a single path, a list, or None)."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def load_all(paths: list[str], expect: str) -> list:
    """Examples of every file in ``paths`` (validated as format ``expect``)."""
    examples = []
    for p in paths:
        examples.extend(load_examples(p, expect=expect))
    return examples


def split_eval(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """Deterministically hold out ``round(fraction * n)`` (at least 1) examples; none if
    ``fraction`` is 0 or there are fewer than 2 examples."""
    if fraction <= 0 or len(examples) < 2:
        return examples, []
    order = list(range(len(examples)))
    random.Random(f"eval-split:{seed}").shuffle(order)
    n_eval = min(len(examples) - 1, max(1, round(fraction * len(examples))))
    held = set(order[:n_eval])
    return (
        [e for i, e in enumerate(examples) if i not in held],
        [e for i, e in enumerate(examples) if i in held],
    )


def train_eval_split(config, read: Callable[[list[str]], list]) -> tuple[list, list]:
    """The run's train and held-out examples, each a list of what ``read(paths)`` returns for
    the files of ``data.train`` / ``data.eval``: without held-out examples there,
    ``data.eval_fraction`` of train is split off (:func:`split_eval`, seeded by ``train.seed``);
    the held-out ones are capped at ``data.max_eval_examples``. Every method reads its data
    through this."""
    train = read(data_files(config.data.train))
    evals = read(data_files(config.data.eval))
    if not evals:
        train, evals = split_eval(train, config.data.eval_fraction, config.train.seed)
    if config.data.max_eval_examples is not None:
        evals = evals[: config.data.max_eval_examples]
    return train, evals


def train_eval_examples(config, expect: str) -> tuple[list, list]:
    """:func:`train_eval_split` of SFT-style files, validated as method ``expect``'s formats."""
    return train_eval_split(config, partial(load_all, expect=expect))


def template_name(config) -> str:
    """What messages call the run's chat template: ``model.chat_template`` when set, else the
    tokenizer or model folder whose template renders the data."""
    return config.model.chat_template or config.model.tokenizer or config.model.path


def render_examples(
    config, tokenizer, *, max_length: int, train_on_all_tokens: bool
) -> tuple[list, list, dict, dict]:
    """The run's SFT-style train / held-out examples (:func:`train_eval_examples` of
    ``config.method``) rendered by one :class:`Renderer`: ``(train, evals, stats, eval_stats)``.
    The result is reused from the render cache (:mod:`tunesmith.data.render_cache`) when the
    files, settings, tokenizer and code are all the same as a run before."""
    from dataclasses import asdict

    from ..data import render_cache

    def render():
        train_ex, eval_ex = train_eval_examples(config, config.method)
        renderer = Renderer(
            tokenizer,
            max_length=max_length,
            train_on_all_tokens=train_on_all_tokens,
            template_name=template_name(config),
        )
        train, stats = render_all(renderer, train_ex)
        evals, eval_stats = render_all(renderer, eval_ex)
        return train, evals, stats, eval_stats

    settings = {
        "data": asdict(config.data),
        "method": config.method,
        "seed": config.train.seed,
        "max_length": max_length,
        "train_on_all_tokens": train_on_all_tokens,
        "template": template_name(config),
    }
    files = data_files(config.data.train) + data_files(config.data.eval)
    return render_cache.cached_render(render_cache.render_key(files, settings, tokenizer), render)


def check_rendered(config, train: list, stats: dict) -> None:
    """After rendering SFT-style data (``stats`` from :func:`~tunesmith.data.render.render_all`):
    DataError when no training example is left, a warning when some were truncated."""
    if not train:
        raise DataError(
            f"no trainable example in {config.data.train}: every example was empty or "
            "had no assistant tokens to train on"
        )
    if stats["truncated"]:
        log.warning(
            "data: %d of %d training examples were longer than train.max_length=%d and "
            "were truncated from the end",
            stats["truncated"],
            stats["examples"],
            config.train.max_length,
        )


def sequence_length(item) -> int:
    """Tokens of a single-sequence item (a ``Rendered`` or anything with ``input_ids``)."""
    return len(item.input_ids)


def pack_prepared(
    train: list,
    evals: list,
    stats: dict,
    eval_stats: dict,
    *,
    size: Callable[[Any], int] = sequence_length,
    packing: bool,
    max_length: int,
    **extra,
) -> PreparedData:
    """Rendered ``train`` / ``evals`` items grouped into units (:func:`make_units` over each
    item's ``size`` in tokens, packed up to ``max_length`` when ``packing``), with the stats
    every method reports: ``{"train": stats, "eval": eval_stats, "train_rows",
    "train_sequences", "eval_sequences", **extra}``."""
    train_units = make_units([size(it) for it in train], packing=packing, max_length=max_length)
    eval_units = make_units([size(it) for it in evals], packing=packing, max_length=max_length)
    record = {
        "train": stats,
        "eval": eval_stats,
        "train_rows": len(train_units),
        "train_sequences": len(train),
        "eval_sequences": len(evals),
        **extra,
    }
    return PreparedData(train, evals, train_units, eval_units, record)
