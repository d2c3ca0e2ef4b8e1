"""Selection is defined and finite for every temperature the door accepts.

Regression: ``temperature`` 1e-300 made ``softmax(z / T)`` overflow to inf - inf = NaN, and
``torch.multinomial`` raised inside the shared batch step. Now temperatures below ``GREEDY_BELOW``
(1e-5) are the argmax by definition, and ``nucleus_probs`` shifts by the max before dividing, so
any finite T > 0 gives a finite distribution.

Logits: z = [2, 1, 0, -1]. With T = 1e-300: (z - 2) / T = [0, -1e300, -2e300, -3e300]
(the others overflow to -inf in float64 only below ~1.8e-308), softmax = [1, 0, 0, 0].
"""

import math

import pytest
import torch

from tunesmith.serve.sampling import GREEDY_BELOW, BadLogits, SamplingParams, nucleus_probs, select

Z = torch.tensor([2.0, 1.0, 0.0, -1.0])


@pytest.mark.parametrize("temperature", [1e-300, 1e-45, 5e-324, 1e-9, GREEDY_BELOW / 2])
def test_tiny_temperature_is_the_argmax_without_a_generator(temperature):
    z = torch.tensor([0.5, 3.0, 2.999, -1.0])
    assert select(z, SamplingParams(temperature=temperature), {}, None).token == 1


@pytest.mark.parametrize("temperature", [5e-324, 1e-300, 1e-45, 1e-5, 1e-3])
@pytest.mark.parametrize("top_p", [1.0, 0.5, 5e-324])
def test_nucleus_probs_are_finite_for_any_positive_temperature(temperature, top_p):
    p = nucleus_probs(Z, temperature, top_p)
    assert torch.isfinite(p).all() and float(p.sum()) == pytest.approx(1.0)
    assert p.tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0], abs=1e-12)


def test_just_above_the_floor_still_samples():
    # T = 2e-5 > GREEDY_BELOW: a tie stays a tie, so both tied tokens are drawn.
    z = torch.tensor([3.0, 3.0, -50.0])
    g = torch.Generator().manual_seed(0)
    draws = {select(z, SamplingParams(temperature=2e-5), {}, g).token for _ in range(64)}
    assert draws == {0, 1}


def test_huge_logits_do_not_overflow():
    # float32 logits near their limit divided by T = 1e-5 exceed float32's range; the float64
    # max-shift keeps them finite: exponents [0, -(3e38 - 1e38) / 1e-5 = -2e43 -> exp = 0].
    z = torch.tensor([3e38, 1e38], dtype=torch.float32)
    assert nucleus_probs(z, 1e-5 * 1.5, 1.0).tolist() == [1.0, 0.0]


def test_minus_inf_logits_are_zero_probability():
    z = torch.tensor([1.0, -math.inf, 0.0])
    # softmax([1, 0]) over the finite entries: e / (e + 1) = 0.731059
    assert nucleus_probs(z, 1.0, 1.0).tolist() == pytest.approx([0.731059, 0.0, 0.268941], abs=1e-6)


@pytest.mark.parametrize("bad", [[math.nan, 1.0], [math.inf, 1.0], [-math.inf, -math.inf]])
def test_logits_without_a_finite_maximum_raise_bad_logits(bad):
    for temperature in (0.0, 1.0):
        with pytest.raises(BadLogits):
            select(torch.tensor(bad), SamplingParams(temperature=temperature), {}, torch.Generator())
