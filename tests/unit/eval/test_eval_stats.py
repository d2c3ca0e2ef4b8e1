"""Paired bootstrap intervals and win/tie/loss on tiny cases whose answer is known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tunesmith.eval.stats import bootstrap_ci, paired_bootstrap, win_tie_loss


def test_constant_difference_has_a_zero_width_interval():
    # a - b = 0.25 on every example, so every resample's difference is exactly 0.25
    res = paired_bootstrap([1.0, 0.5, 0.75, 0.25], [0.75, 0.25, 0.5, 0.0], seed=3)
    assert res["diff"] == pytest.approx(0.25)
    assert res["low"] == pytest.approx(0.25) and res["high"] == pytest.approx(0.25)
    assert res["n"] == 4


def test_two_examples_interval_spans_their_differences():
    # differences d = (0, 1). A resample of 2 is {0,0}, {0,1}/{1,0}, {1,1} with probability
    # 1/4, 1/2, 1/4, so the mean difference is 0, 0.5 or 1; both tails (25% each) exceed 2.5%,
    # hence the 95% interval is [0, 1] and the point estimate is 0.5.
    res = paired_bootstrap([1.0, 1.0], [1.0, 0.0], seed=0, n_resamples=4000)
    assert res["diff"] == 0.5
    assert (res["low"], res["high"]) == (0.0, 1.0)


def test_three_examples_upper_tail_by_hand():
    # differences (0, 0, 3): a resample's mean is 3k/3 = k where k ~ Binomial(3, 1/3) counts how
    # often the '3' is drawn: P(k=0) = 8/27 = 0.296 -> mean 0, P(k=3) = 1/27 = 0.037 -> mean 3.
    # Both tails hold more than 2.5% of resamples: the 95% interval is [0, 3]; the 90% interval
    # (5% tails) is [0, 2] because P(k=3) = 3.7% < 5% while P(k>=2) = 7/27 = 25.9%.
    res95 = paired_bootstrap([0.0, 0.0, 3.0], [0.0, 0.0, 0.0], seed=7, n_resamples=20000)
    assert (res95["low"], res95["high"]) == (0.0, 3.0) and res95["diff"] == pytest.approx(1.0)
    res90 = paired_bootstrap([0.0, 0.0, 3.0], [0.0, 0.0, 0.0], seed=7, n_resamples=20000, confidence=0.90)
    assert (res90["low"], res90["high"]) == (0.0, 2.0)


def test_same_seed_same_interval_and_pairing_matters():
    rng = np.random.default_rng(1)
    difficulty = rng.normal(0, 5, size=50)  # large per-example spread shared by both models
    a, b = difficulty + 0.3, difficulty.copy()
    r1, r2 = paired_bootstrap(a, b, seed=11), paired_bootstrap(a, b, seed=11)
    assert (r1["low"], r1["high"]) == (r2["low"], r2["high"])
    # Paired: the shared difficulty cancels, the difference is exactly 0.3 in every resample.
    assert r1["low"] == pytest.approx(0.3) and r1["high"] == pytest.approx(0.3)


def test_weighted_loss_and_perplexity_transform():
    # per-example mean losses 1 and 3 over 1 and 3 tokens: token-weighted mean = (1*1 + 3*3)/4 = 2.5
    res = paired_bootstrap([1.0, 3.0], [0.0, 0.0], weights=[1, 3])
    assert res["a"] == pytest.approx(2.5)
    ppl = bootstrap_ci([1.0, 3.0], weights=[1, 3], transform=math.exp)
    assert ppl["value"] == pytest.approx(math.exp(2.5))
    # resamples: {1,1} -> 1, {3,3} -> 3, mixed -> 2.5; so the interval is [e^1, e^3]
    assert ppl["low"] == pytest.approx(math.e) and ppl["high"] == pytest.approx(math.exp(3))


def test_win_tie_loss_counts():
    a, b = [1, 0, 0.5, 0.5, 1], [0, 0, 0.5, 1, 0]
    assert win_tie_loss(a, b) == {"win": 2, "tie": 2, "loss": 1}
    # for a loss, lower is better: a beats b where a < b
    assert win_tie_loss([1.0, 2.0, 3.0], [2.0, 2.0, 1.0], higher_is_better=False) == {
        "win": 1,
        "tie": 1,
        "loss": 1,
    }


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError):
        paired_bootstrap([1, 2], [1])
