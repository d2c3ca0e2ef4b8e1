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
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..config.schema import DataSource, as_sources
from ..data import sources
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
    """``data.train`` / ``data.eval`` as a list of paths (a single path or source, a list, or None)."""
    return [s.path for s in as_sources(value)]


def load_all(paths: list, expect: str) -> list:
    """Examples of every file in ``paths`` (paths or :class:`DataSource` items, validated as
    format ``expect``)."""
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


def train_eval_split(config, read: Callable[[list], list]) -> tuple[list, list]:
    """The run's train and held-out examples, each a list of what ``read(paths)`` returns for
    the sources of ``data.train`` / ``data.eval`` (one source per call; a source with only a
    path is passed as the path string, any other as its :class:`DataSource`, which
    :func:`~tunesmith.data.readers.iter_rows` reads with its column renames and split).

    Sources without weights are concatenated. Weighted sources are mixed
    (:func:`tunesmith.data.sources.mix`, seeded by ``train.seed``; the meaning of a weight is
    that module's docstring). Without held-out examples in ``data.eval``, ``data.eval_fraction``
    of train is split off (:func:`split_eval`, seeded by ``train.seed``) — of each source before
    mixing when weighted. The held-out ones are capped at ``data.max_eval_examples``. Every
    method reads its data through this."""
    seed = config.train.seed
    train_sources = as_sources(config.data.train)
    eval_sources = as_sources(config.data.eval)
    train_pools = _read_pools(train_sources, read)
    eval_pools = _read_pools(eval_sources, read)
    evals = _combine(eval_sources, eval_pools, seed, "eval", None)
    if not evals and not sources.weighted(train_sources):
        train, evals = split_eval(_concat(train_pools), config.data.eval_fraction, seed)
    else:
        if not evals:
            split = [split_eval(pool, config.data.eval_fraction, seed) for pool in train_pools]
            train_pools, evals = [kept for kept, _ in split], _concat([held for _, held in split])
        train = _combine(train_sources, train_pools, seed, "train", config.data.mix_size)
    if config.data.max_eval_examples is not None:
        evals = evals[: config.data.max_eval_examples]
    return train, evals


def _read_pools(items: list[DataSource], read: Callable[[list], list]) -> list[list]:
    pools = []
    for s in items:
        try:
            pools.append(read([s.path if s.plain else s]))
        except DataError as err:
            raise _in_file_columns(err, s) from None
    if sources.weighted(items):
        for s, pool in zip(items, pools):
            if not pool:
                raise DataError("this weighted source yielded no example to mix", path=s.path)
    return pools


def _in_file_columns(err: DataError, source: DataSource) -> DataError:
    """``err`` about a renamed field (``messages[0].role``) restated with the column the file
    holds (``conversation[0].role``), so the field named is one the user can find in the file."""
    root = re.match(r"[^.\[]*", err.field or "").group(0)
    if root not in source.columns:
        return err
    column = source.columns[root]
    note = f" (the source's columns read '{column}' as '{root}')"
    return DataError(
        err.bare_message + note, path=err.path, line=err.line, field=column + err.field[len(root) :]
    )


def _combine(items: list[DataSource], pools: list[list], seed: int, role: str, total: int | None) -> list:
    """Concatenated pools, or their weighted mixture (logging what each source gave)."""
    if not sources.weighted(items):
        return _concat(pools)
    mixed = sources.mix(pools, [s.weight for s in items], seed, role, total)
    counts = sources.mixture_counts([len(p) for p in pools], [s.weight for s in items], total)
    for s, pool, count in zip(items, pools, counts):
        log.info(
            "data: %s mixture: %d examples from %s (%d available, weight %g)",
            role,
            count,
            s.path,
            len(pool),
            s.weight,
        )
    return mixed


def _concat(pools: list[list]) -> list:
    return [example for pool in pools for example in pool]


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
            f"no trainable example in {', '.join(data_files(config.data.train))}: every example was empty or "
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
