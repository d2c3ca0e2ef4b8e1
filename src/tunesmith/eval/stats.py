"""Comparing two models on the same examples: paired bootstrap intervals and win/tie/loss.

The paired bootstrap (Efron & Tibshirani 1993, ch. 13 percentile interval; applied to system
comparison by Koehn 2004, "Statistical Significance Tests for Machine Translation Evaluation")
resamples *examples* with replacement, computes the metric of both models on the same resample,
and takes the 2.5th and 97.5th percentiles of the difference. Pairing matters: both models
answer the same questions, so question difficulty cancels out of the difference.

Metrics are weighted means ``sum(w_i x_i) / sum(w_i)`` of per-example values (weights are 1 for
generation metrics and the supervised token counts for loss, so the resampled loss stays a
token-weighted mean), optionally passed through ``transform`` (``exp`` for perplexity).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def weighted_mean(values, weights=None) -> float:
    values = np.asarray(values, dtype=np.float64)
    if weights is None:
        return float(values.mean()) if values.size else float("nan")
    weights = np.asarray(weights, dtype=np.float64)
    total = weights.sum()
    return float((values * weights).sum() / total) if total > 0 else float("nan")


def paired_bootstrap(
    a,
    b,
    *,
    weights=None,
    transform: Callable[[float], float] | None = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Difference ``metric(a) - metric(b)`` with a paired percentile bootstrap interval.

    Args:
        a, b: per-example values of the two models, ``[n]`` each, same example order.
        weights: per-example weights ``[n]`` (None: all 1).
        transform: applied to each weighted mean before differencing (e.g. ``math.exp``).
        n_resamples / confidence / seed: bootstrap settings; the same seed gives the same
            interval (numpy PCG64).

    Returns ``{"a", "b", "diff", "low", "high", "n"}`` where ``a``/``b``/``diff`` are computed on
    the full sample and ``low``/``high`` bound the central ``confidence`` interval of the
    resampled differences.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two equal-length vectors, got {a.shape} and {b.shape}")
    n = a.shape[0]
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    f = transform or (lambda x: x)
    value_a, value_b = f(weighted_mean(a, w)), f(weighted_mean(b, w))
    out = {"a": value_a, "b": value_b, "diff": value_a - value_b, "low": None, "high": None, "n": int(n)}
    if n == 0:
        return out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))  # [R, n] resampled example indices
    ws = w[idx]
    totals = ws.sum(axis=1)
    # A resample whose weights are all zero has no defined mean; it is dropped.
    ok = totals > 0
    mean_a = (a[idx] * ws).sum(axis=1)[ok] / totals[ok]
    mean_b = (b[idx] * ws).sum(axis=1)[ok] / totals[ok]
    if transform is not None:
        vf = np.vectorize(f, otypes=[np.float64])
        diffs = vf(mean_a) - vf(mean_b)
    else:
        diffs = mean_a - mean_b
    alpha = (1.0 - confidence) / 2.0
    out["low"], out["high"] = (float(x) for x in np.quantile(diffs, [alpha, 1.0 - alpha]))
    return out


def win_tie_loss(a, b, *, higher_is_better: bool = True, tolerance: float = 1e-9) -> dict:
    """Per-example counts of ``a`` beating, tying with and losing to ``b``."""
    win = tie = loss = 0
    for x, y in zip(a, b):
        d = (x - y) if higher_is_better else (y - x)
        if abs(d) <= tolerance:
            tie += 1
        elif d > 0:
            win += 1
        else:
            loss += 1
    return {"win": win, "tie": tie, "loss": loss}


def safe_exp(x: float) -> float:
    """``exp`` capped at exp(50), so a diverged model's perplexity stays finite."""
    return math.exp(min(x, 50.0))


def bootstrap_ci(
    values,
    *,
    weights=None,
    transform: Callable[[float], float] | None = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """One model's metric with a percentile bootstrap interval: ``{"value", "low", "high", "n"}``.

    The same resampling as :func:`paired_bootstrap`, against a second "model" that is always 0
    (so the difference is the metric itself; with a transform, the baseline's ``f(0)`` is added
    back)."""
    values = np.asarray(values, dtype=np.float64)
    zero = np.zeros_like(values)
    res = paired_bootstrap(
        values,
        zero,
        weights=weights,
        transform=transform,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )
    shift = res["b"]  # f(0): 0 without a transform, 1 for exp
    low = None if res["low"] is None else res["low"] + shift
    high = None if res["high"] is None else res["high"] + shift
    return {"value": res["a"], "low": low, "high": high, "n": res["n"]}
