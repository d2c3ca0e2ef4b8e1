"""Several data sources in one run: weighted mixing, and the fingerprint that pins them.

``data.train`` (and ``data.eval``) is a list of sources (:class:`~tunesmith.config.schema.DataSource`:
a path, optionally a ``weight``, ``columns`` renames and a ``split``). Reading a source is
:func:`tunesmith.data.readers.iter_rows`'s business; this module decides how many examples of
each source a run trains on.

What a weight means (the contract; docs/data.md states it for users):

- Without weights the sources are concatenated in order, every example once (as one file).
- With weights ``w_1 … w_k`` (all > 0; set on every source or on none) the run trains on a
  *mixture* of ``N`` examples, ``N = data.mix_size`` or, by default, the sum of the sources'
  sizes ``n_1 + … + n_k``. Source ``i`` contributes exactly ``c_i`` examples, ``N · w_i / Σw``
  rounded by largest remainder (:func:`mixture_counts`: the ``c_i`` sum to ``N``; ties go to the
  earlier source).
- The ``c_i`` examples of source ``i`` are drawn *without replacement within each pass*: every
  example ``c_i // n_i`` times, plus ``c_i mod n_i`` distinct examples chosen by a seeded
  shuffle (:func:`draw`). So a source is never repeated while some of its examples are unused,
  and a down-weighted source contributes a random subset.
- The mixture is drawn once per run, seeded by ``train.seed``, and put in a seeded random
  order; each epoch passes over the whole mixture (the engine reshuffles per epoch), so every
  epoch holds ``c_i`` examples of source ``i``. Same files, config and seed: same mixture —
  which is what exact resume needs; :func:`data_fingerprint` covers the files' bytes, the
  weights, the column renames, the splits and ``mix_size``, and a resume is refused when it
  changed.
- When ``data.eval`` is absent, ``data.eval_fraction`` of each weighted source is held out
  *before* mixing (so an up-sampled example never lands in both train and eval); the held-out
  parts are concatenated unweighted.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from tunesmith.config.schema import DataConfig, DataSource, as_sources
from tunesmith.errors import ConfigError
from tunesmith.hashing import update_with_file

T = TypeVar("T")


def weighted(sources: Sequence[DataSource]) -> bool:
    """Whether ``sources`` are mixed by weight (ConfigError when only some carry one)."""
    given = [s.weight is not None for s in sources]
    if any(given) and not all(given):
        missing = [i for i, g in enumerate(given) if not g]
        raise ConfigError(
            f"config: data source [{missing[0]}] ({sources[missing[0]].path}) has no weight while "
            "others have one: give every source of the list a weight, or none (none: concatenate)"
        )
    return bool(given) and all(given)


def mixture_counts(sizes: Sequence[int], weights: Sequence[float], total: int | None = None) -> list[int]:
    """Examples drawn from each source: ``total · w_i / Σw`` by largest remainder (Hamilton's
    method), so the counts sum to ``total`` exactly; ``total`` defaults to ``sum(sizes)``.

    Worked example: sizes (10, 30), weights (0.7, 0.3), total 40: quotas 28 and 12, so
    [28, 12]. Weights (1, 1, 1), total 10: quotas 3.33 each, floors 3+3+3 = 9, the one left goes
    to the first of the equal remainders: [4, 3, 3]."""
    n = sum(sizes) if total is None else total
    scale = sum(weights)
    quotas = [n * w / scale for w in weights]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def draw(size: int, count: int, rng: random.Random) -> list[int]:
    """``count`` indices into a source of ``size`` examples: each index ``count // size`` times,
    then ``count % size`` distinct ones from a shuffle by ``rng`` (sorted, so the file order
    survives until the mixture is shuffled)."""
    full, rest = divmod(count, size)
    order = list(range(size))
    rng.shuffle(order)
    return [i for _ in range(full) for i in range(size)] + sorted(order[:rest])


def mix(
    pools: Sequence[Sequence[T]], weights: Sequence[float], seed: int, role: str, total: int | None = None
) -> list[T]:
    """The weighted mixture of ``pools`` (one list of examples per source; see the module
    docstring): :func:`mixture_counts` examples of each, :func:`draw`-n with a generator seeded
    by ``(seed, role, source index)``, then shuffled by one seeded by ``(seed, role)``. ``role``
    ("train" / "eval") keeps the two mixtures' draws independent."""
    counts = mixture_counts([len(p) for p in pools], weights, total)
    out: list[T] = []
    for i, (pool, count) in enumerate(zip(pools, counts)):
        out.extend(pool[j] for j in draw(len(pool), count, random.Random(f"mix:{seed}:{role}:{i}")))
    random.Random(f"mix-order:{seed}:{role}").shuffle(out)
    return out


def data_fingerprint(data: DataConfig) -> str:
    """16 hex digits of SHA-256 over what the run's examples are made from: each source's
    file name and bytes (every file of a ``save_to_disk`` folder, by relative path), and, when
    any source has more than a path, the weights, column renames, splits and ``mix_size``.
    Runs whose sources are all plain files keep the fingerprint they always had (name + bytes
    of each file), so their checkpoints still resume."""
    sources = as_sources(data.train) + as_sources(data.eval)
    h = hashlib.sha256()
    plain = all(s.plain and not Path(s.path).is_dir() for s in sources) and data.mix_size is None
    for s in sources:
        h.update(Path(s.path).name.encode())
        _update_with_source(h, Path(s.path))
        if not plain:
            spec = {"weight": s.weight, "columns": sorted(s.columns.items()), "split": s.split}
            h.update(json.dumps(spec, sort_keys=True).encode())
    if not plain:
        h.update(json.dumps({"mix_size": data.mix_size, "train": len(as_sources(data.train))}).encode())
    return h.hexdigest()[:16]


def _update_with_source(h, path: Path) -> None:
    if not path.is_dir():
        update_with_file(h, path)
        return
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(file.relative_to(path).as_posix().encode())
        update_with_file(h, file)
