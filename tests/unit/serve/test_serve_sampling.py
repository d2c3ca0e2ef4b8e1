"""Token selection: nucleus, temperature, penalties, logit bias and logprobs, worked by hand.

Logits used throughout: z = [2, 1, 0, -1].
  e^z = [7.389056, 2.718282, 1.000000, 0.367879], sum = 11.475217
  softmax(z) = [0.643914, 0.236883, 0.087144, 0.032059]
  log_softmax(z) = z - ln(11.475217) = z - 2.440189 = [-0.440189, -1.440189, -2.440189, -3.440189]
"""

import pytest
import torch

from tunesmith.serve.sampling import SamplingParams, nucleus_probs, process_logits, select

Z = torch.tensor([2.0, 1.0, 0.0, -1.0])


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    # top_p = 0.8: mass above each sorted token = [0, 0.643914, 0.880797, 0.967941]; kept while < 0.8
    # -> tokens 0 and 1, renormalised: 0.643914 / 0.880797 = 0.731059 (= 1 / (1 + e^-1)), 0.268941.
    assert nucleus_probs(Z, 1.0, 0.8).tolist() == pytest.approx([0.731059, 0.268941, 0, 0], abs=1e-6)
    # top_p = 0.5: only the argmax has mass above it below 0.5.
    assert nucleus_probs(Z, 1.0, 0.5).tolist() == pytest.approx([1, 0, 0, 0])
    # temperature 2, no nucleus: softmax([1, .5, 0, -.5]) = [2.718282, 1.648721, 1, .606531] / 5.973534
    assert nucleus_probs(Z, 2.0, 1.0).tolist() == pytest.approx(
        [0.455054, 0.276004, 0.167405, 0.101537], abs=1e-6
    )


def test_penalties_and_bias():
    # counts {0: 2, 2: 1}, frequency 0.25, presence 0.5:
    #   z0 = 2 - (2 * 0.25 + 0.5) = 1.0 ; z2 = 0 - (1 * 0.25 + 0.5) = -0.75 ; bias +5 on token 3 -> 4.0
    p = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25, logit_bias={3: 5.0})
    assert process_logits(Z, p, {0: 2, 2: 1}).tolist() == pytest.approx([1.0, 1.0, -0.75, 4.0])
    assert Z.tolist() == [2.0, 1.0, 0.0, -1.0]  # input untouched
    assert select(Z, SamplingParams(temperature=0, logit_bias={3: 5.0}), {}, None).token == 3


def test_greedy_logprobs_are_raw_log_softmax():
    c = select(Z, SamplingParams(temperature=0, top_logprobs=2, logit_bias={1: 10.0}), {}, None)
    # bias makes token 1 the choice, but reported logprobs are the model's own (before bias)
    assert c.token == 1 and c.logprob == pytest.approx(-1.440189, abs=1e-6)
    assert c.top == [(0, pytest.approx(-0.440189, abs=1e-6)), (1, pytest.approx(-1.440189, abs=1e-6))]
    assert select(Z, SamplingParams(temperature=0), {}, None).logprob is None


def test_sampling_follows_the_nucleus_and_the_seed():
    params = SamplingParams(temperature=1.0, top_p=0.8)
    g = torch.Generator().manual_seed(0)
    draws = [select(Z, params, {}, g).token for _ in range(3000)]
    assert set(draws) == {0, 1}
    assert draws.count(0) / len(draws) == pytest.approx(0.731059, abs=0.03)  # ~4.5 sigma
    again = torch.Generator().manual_seed(0)
    assert [select(Z, params, {}, again).token for _ in range(50)] == draws[:50]
