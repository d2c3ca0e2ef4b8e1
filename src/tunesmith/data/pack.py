"""Best-fit-decreasing packing and the deterministic per-epoch micro-batch order.

A *unit* is what one micro-batch slot holds: with packing, a bin of examples whose lengths sum
to at most ``max_length``; without packing, a single example. Micro-batch ``k`` of epoch ``e``
is a pure function of (units, seed, e, k), which is what makes exact resume possible.
"""

from __future__ import annotations

import bisect
import random


def best_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Pack item indices into bins of ``capacity`` tokens, best fit, longest first.

    Every length must be <= capacity. Ties are broken by index so the result is deterministic.
    Returns bins as lists of item indices (each bin sorted ascending).
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (remaining capacity, bin id)
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"item {i} has length {n} > capacity {capacity}")
        pos = bisect.bisect_left(free, (n, -1))
        if pos < len(free):
            remaining, b = free.pop(pos)
        else:
            b, remaining = len(bins), capacity
            bins.append([])
        bins[b].append(i)
        bisect.insort(free, (remaining - n, b))
    return [sorted(b) for b in bins]


def make_units(lengths: list[int], *, packing: bool, max_length: int) -> list[list[int]]:
    """Units of example indices (bins when packing, singletons otherwise)."""
    if packing:
        return best_fit_decreasing(lengths, max_length)
    return [[i] for i in range(len(lengths))]


def epoch_order(n_units: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """Permutation of unit indices for one epoch (seeded by ``seed`` and ``epoch``)."""
    order = list(range(n_units))
    if shuffle:
        random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


def micro_batches(
    units: list[list[int]], batch_size: int, seed: int, epoch: int, shuffle: bool = True
) -> list[list[int]]:
    """Example indices of each micro-batch of an epoch; the last one may be smaller."""
    order = epoch_order(len(units), seed, epoch, shuffle)
    out = []
    for start in range(0, len(order), batch_size):
        out.append([i for u in order[start : start + batch_size] for i in units[u]])
    return out
