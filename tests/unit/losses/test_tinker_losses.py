"""Tinker's built-in losses (losses/tinker.py) with values and gradients worked out by hand.

Notation as in the module: lp = target log-prob under the learner, q = the sampler's log-prob,
A = advantage, rho = exp(lp - q). Every loss is a sum over tokens (Tinker's reduction).
"""

from __future__ import annotations

import math

import pytest
import torch

from tunesmith.losses.tinker import (
    cispo_loss,
    cross_entropy_loss,
    dro_loss,
    importance_sampling_loss,
    ppo_loss,
    tinker_loss,
)

LN2 = math.log(2.0)


def _leaf(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=True)


def _with_ratios(ratios, q=None):
    """lp (a grad leaf) and q such that exp(lp - q) = ratios (q = 0 unless given)."""
    q = torch.zeros(len(ratios)) if q is None else torch.tensor(q)
    lp = (torch.log(torch.tensor(ratios)) + q).clone().requires_grad_(True)
    return lp, q


# --- cross_entropy -------------------------------------------------------------------------


def test_cross_entropy_is_a_weighted_sum():
    # p = 0.5, 0.25, 0.1 with weights 0, 1, 1 (first position is prompt):
    # loss = -(0 * ln .5 + ln .25 + ln .1) = ln 4 + ln 10 = 1.386294 + 2.302585 = 3.688879.
    lp = torch.log(torch.tensor([0.5, 0.25, 0.1])).requires_grad_(True)
    w = torch.tensor([0.0, 1.0, 1.0])
    loss, m = cross_entropy_loss(lp, w)
    assert loss.item() == pytest.approx(math.log(4) + math.log(10), abs=1e-6)
    assert m["loss:sum"].item() == pytest.approx(3.688879, abs=1e-5)
    loss.backward()
    assert torch.equal(lp.grad, -w)  # d/dlp = -weights
    # A sum, not a mean: the same datum twice (a [2, 3] batch) gives twice the loss.
    loss2, _ = cross_entropy_loss(lp.detach().repeat(2, 1), w.repeat(2, 1))
    assert loss2.item() == pytest.approx(2 * loss.item(), abs=1e-6)


def test_cross_entropy_top_k_targets():
    # [N=2, K=2]: teacher weights 0.75 / 0.25 on p = 0.5 / 0.25, then a hard target on p = 0.2.
    # loss = 0.75 ln 2 + 0.25 ln 4 + 1 * ln 5 = 0.519860 + 0.346574 + 1.609438 = 2.475872.
    lp = torch.log(torch.tensor([[0.5, 0.25], [0.2, 0.4]]))
    w = torch.tensor([[0.75, 0.25], [1.0, 0.0]])
    loss, _ = cross_entropy_loss(lp, w)
    assert loss.item() == pytest.approx(2.475872, abs=1e-5)


def test_cross_entropy_reweighting_reproduces_any_gradient():
    # forward_backward_custom sends weights = -dC/dlp to a cross_entropy backward; the
    # gradient of -sum(w * lp) is then exactly dC/dlp.
    g = torch.tensor([0.3, -1.2, 0.0])
    lp = _leaf([-1.0, -2.0, -3.0])
    loss, _ = cross_entropy_loss(lp, -g)
    loss.backward()
    assert torch.allclose(lp.grad, g)


# --- importance_sampling -------------------------------------------------------------------


def test_importance_sampling_by_hand():
    # lp = ln .25, ln .75, ln .9; q = ln .5, ln .5, 0 (a prompt slot padded with 0, A = 0)
    # rho = 0.5, 1.5, 0.9; loss = -(0.5 * 2 + 1.5 * -1 + 0.9 * 0) = 0.5.
    lp, q = _with_ratios([0.5, 1.5, 0.9], q=[math.log(0.5), math.log(0.5), 0.0])
    adv = torch.tensor([2.0, -1.0, 0.0])
    loss, m = importance_sampling_loss(lp, q, adv)
    assert loss.item() == pytest.approx(0.5, abs=1e-6)
    assert m["loss:sum"].item() == pytest.approx(0.5, abs=1e-6)
    loss.backward()
    # d/dlp = -rho * A = -1, +1.5, 0.
    assert torch.allclose(lp.grad, torch.tensor([-1.0, 1.5, 0.0]), atol=1e-6)
    assert loss.dtype == torch.float32


def test_importance_sampling_on_policy_is_the_policy_gradient():
    # q = lp: rho = 1, loss = -sum(A) and the gradient -A.
    lp = _leaf([-0.3, -2.0])
    loss, _ = importance_sampling_loss(lp, lp.detach(), torch.tensor([1.0, -3.0]))
    loss.backward()
    assert loss.item() == pytest.approx(2.0, abs=1e-6)
    assert torch.allclose(lp.grad, torch.tensor([-1.0, 3.0]))


def test_large_ratio_with_zero_advantage_stays_finite():
    # lp - q = 99: e^99 overflows float32 (max ~e^88.7) and inf * 0 would be NaN; float64
    # keeps rho finite, so a zero-advantage token contributes exactly 0.
    lp = _leaf([-1.0, -0.5])
    q = torch.tensor([-100.0, -0.5])
    loss, _ = importance_sampling_loss(lp, q, torch.tensor([0.0, 1.0]))
    loss.backward()
    assert loss.item() == pytest.approx(-1.0, abs=1e-6)
    assert torch.isfinite(lp.grad).all() and lp.grad[0].item() == 0.0


# --- ppo -----------------------------------------------------------------------------------


def _ppo_case(**kw):
    # rho = 1.5, 0.5, 0.5, 1.5, 1.0 with A = +1, +1, -1, -1, +2.
    lp, q = _with_ratios([1.5, 0.5, 0.5, 1.5, 1.0])
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, 2.0])
    loss, m = ppo_loss(lp, q, adv, **kw)
    loss.backward()
    return loss, m, lp.grad


def test_ppo_default_clip_is_0_8_to_1_2():
    loss, m, grad = _ppo_case()
    # -min(rho A, clip(rho, .8, 1.2) A) per token:
    #   1.5, +1: min(1.5, 1.2)   =  1.2 -> -1.2, clip binds (high): gradient 0
    #   0.5, +1: min(0.5, 0.8)   =  0.5 -> -0.5, gradient -rho A = -0.5
    #   0.5, -1: min(-.5, -.8)   = -0.8 ->  0.8, clip binds (low): gradient 0
    #   1.5, -1: min(-1.5, -1.2) = -1.5 ->  1.5, gradient +1.5
    #   1.0, +2: 2               ->        -2.0, gradient -2
    # sum = -1.2 - 0.5 + 0.8 + 1.5 - 2.0 = -1.4
    assert loss.item() == pytest.approx(-1.4, abs=1e-6)
    assert torch.allclose(grad, torch.tensor([0.0, -0.5, 0.0, 1.5, -2.0]), atol=1e-6)
    assert m["clipped_low:sum"].item() == 1 and m["clipped_high:sum"].item() == 1


def test_ppo_wider_thresholds_clip_nothing():
    # [0.4, 1.6] contains every ratio: loss = -(1.5 + 0.5 - 0.5 - 1.5 + 2) = -2, gradient -rho A.
    loss, m, grad = _ppo_case(clip_low_threshold=0.4, clip_high_threshold=1.6)
    assert loss.item() == pytest.approx(-2.0, abs=1e-6)
    assert torch.allclose(grad, torch.tensor([-1.5, -0.5, 0.5, 1.5, -2.0]), atol=1e-6)
    assert m["clipped_low:sum"].item() == 0 and m["clipped_high:sum"].item() == 0


def test_ppo_through_the_dispatcher_with_config_and_per_token_thresholds():
    lp, q = _with_ratios([1.5, 0.5, 0.5, 1.5, 1.0])
    inputs = {"logprobs": q, "advantages": torch.tensor([1.0, 1.0, -1.0, -1.0, 2.0])}
    loss, _ = tinker_loss("ppo", lp, inputs, {"clip_low_threshold": 0.4, "clip_high_threshold": 1.6})
    assert loss.item() == pytest.approx(-2.0, abs=1e-6)
    # A per-token upper threshold of 2.0 on token 0 only: it is no longer clipped (-1.5, not
    # -1.2); the others as with the defaults: -1.5 - 0.5 + 0.8 + 1.5 - 2.0 = -1.7.
    high = torch.tensor([2.0, 1.2, 1.2, 1.2, 1.2])
    loss, m = tinker_loss("ppo", lp, {**inputs, "clip_high_threshold": high})
    loss.backward()
    assert loss.item() == pytest.approx(-1.7, abs=1e-6)
    assert lp.grad[0].item() == pytest.approx(-1.5, abs=1e-6)
    assert m["clipped_high:sum"].item() == 0


# --- cispo ---------------------------------------------------------------------------------


def _cispo_case(**kw):
    # rho = 0.5, 5, 2 with q = ln .5, ln .1, ln .25, so lp = ln .25, ln .5, ln .5; A = +1, +1, -1.
    lp, q = _with_ratios([0.5, 5.0, 2.0], q=[math.log(0.5), math.log(0.1), math.log(0.25)])
    adv = torch.tensor([1.0, 1.0, -1.0])
    loss, m = cispo_loss(lp, q, adv, **kw)
    loss.backward()
    return loss, m, lp.grad


def test_cispo_default_caps_the_weight_at_4_only():
    loss, m, grad = _cispo_case()
    # coefficient clip(rho, 0, 4) = 0.5, 4 (capped from 5), 2;
    # loss = -(0.5 ln .25 * 1 + 4 ln .5 * 1 + 2 ln .5 * -1) = -(-ln2 - 4 ln2 + 2 ln2) = 3 ln 2.
    assert loss.item() == pytest.approx(3 * LN2, abs=1e-6)
    # Stop-gradient: d/dlp = -coefficient * A = -0.5, -4, +2. Without it token 0 would get
    # -A (rho lp + rho) = -(0.5 ln .25 + 0.5) = +0.193, a different number (and sign).
    assert torch.allclose(grad, torch.tensor([-0.5, -4.0, 2.0]), atol=1e-6)
    assert m["clipped_low:sum"].item() == 0 and m["clipped_high:sum"].item() == 1


def test_cispo_clipped_tokens_keep_their_gradient():
    # [0.8, 1.2]: coefficients 0.8 (raised from 0.5), 1.2, 1.2 (both capped): every token is
    # clipped yet none loses its gradient (unlike PPO): d/dlp = -0.8, -1.2, +1.2.
    # loss = -(0.8 ln .25 + 1.2 ln .5 - 1.2 ln .5) = 1.6 ln 2 = 1.109035.
    loss, m, grad = _cispo_case(clip_low_threshold=0.8, clip_high_threshold=1.2)
    assert loss.item() == pytest.approx(1.6 * LN2, abs=1e-6)
    assert torch.allclose(grad, torch.tensor([-0.8, -1.2, 1.2]), atol=1e-6)
    assert m["clipped_low:sum"].item() == 1 and m["clipped_high:sum"].item() == 2


# --- dro -----------------------------------------------------------------------------------


def test_dro_by_hand():
    # lp = -1, -2, -0.5; q = -1.5, -2, 0; A = 1, -0.5, 0; beta 0.05 (the default):
    #   objective = lp A - 0.025 (lp - q)^2 = -1 - 0.00625, 1 - 0, 0 - 0.00625
    #   sum = -0.0125 -> loss 0.0125
    lp = _leaf([-1.0, -2.0, -0.5])
    q = torch.tensor([-1.5, -2.0, 0.0])
    adv = torch.tensor([1.0, -0.5, 0.0])
    loss, m = dro_loss(lp, q, adv)
    loss.backward()
    assert loss.item() == pytest.approx(0.0125, abs=1e-7)
    # d/dlp = -A + beta (lp - q) = -1 + 0.025, 0.5 + 0, 0 - 0.025
    assert torch.allclose(lp.grad, torch.tensor([-0.975, 0.5, -0.025]), atol=1e-6)
    # beta 1 from loss_fn_config: objective -1.125, 1, -0.125 -> loss 0.25; grad -0.5, 0.5, -0.5.
    lp.grad = None
    loss1, _ = tinker_loss("dro", lp, {"logprobs": q, "advantages": adv}, {"beta": 1.0})
    loss1.backward()
    assert loss1.item() == pytest.approx(0.25, abs=1e-6)
    assert torch.allclose(lp.grad, torch.tensor([-0.5, 0.5, -0.5]), atol=1e-6)
    with pytest.raises(ValueError, match="beta"):
        dro_loss(lp, q, adv, beta=-1.0)


# --- padding, dispatch, errors -------------------------------------------------------------


@pytest.mark.parametrize("name", ["cross_entropy", "importance_sampling", "ppo", "cispo", "dro"])
def test_server_padding_is_inert(name):
    # Two datums stacked to [2, 3]; the second has 2 real tokens and a pad whose log-prob is
    # -inf (garbage). Masked, the batch loss is the sum of the two unpadded losses and the pad
    # gets a zero, finite gradient.
    rows = [
        ([-0.5, -1.0, -2.0], [-0.7, -1.0, -1.5], [1.0, -1.0, 0.5]),
        ([-0.2, -3.0], [-0.1, -2.5], [-2.0, 1.0]),
    ]

    def inputs(q, a):
        return {"weights": torch.tensor(a).abs(), "logprobs": torch.tensor(q), "advantages": torch.tensor(a)}

    separate = sum(tinker_loss(name, torch.tensor(lp), inputs(q, a))[0].item() for lp, q, a in rows)
    lp = torch.tensor([rows[0][0], rows[1][0] + [float("-inf")]], requires_grad=True)
    batch = inputs([rows[0][1], rows[1][1] + [0.0]], [rows[0][2], rows[1][2] + [0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    loss, m = tinker_loss(name, lp, batch, mask=mask)
    loss.backward()
    assert loss.item() == pytest.approx(separate, abs=1e-5)
    assert torch.isfinite(lp.grad).all() and lp.grad[1, 2].item() == 0.0
    assert m["loss:sum"].item() == pytest.approx(separate, abs=1e-5)


def test_dispatcher_errors_name_the_problem():
    lp = torch.zeros(3)
    rl = {"logprobs": torch.zeros(3), "advantages": torch.zeros(3)}
    with pytest.raises(ValueError, match="unknown loss_fn 'reinforce'"):
        tinker_loss("reinforce", lp, rl)
    with pytest.raises(ValueError, match="needs loss_fn_inputs advantages"):
        tinker_loss("ppo", lp, {"logprobs": torch.zeros(3)})
    with pytest.raises(ValueError, match="needs loss_fn_inputs weights"):
        tinker_loss("cross_entropy", lp, rl)
    with pytest.raises(ValueError, match="does not take loss_fn_config clip_eps"):
        tinker_loss("ppo", lp, rl, {"clip_eps": 0.2})
    with pytest.raises(ValueError, match="does not take loss_fn_config beta"):
        tinker_loss("importance_sampling", lp, rl, {"beta": 0.1})
    with pytest.raises(ValueError, match="must be a number"):
        tinker_loss("dro", lp, rl, {"beta": "big"})
    with pytest.raises(ValueError, match=r"advantages has shape \(2,\)"):
        tinker_loss("importance_sampling", lp, {"logprobs": torch.zeros(3), "advantages": torch.zeros(2)})
    with pytest.raises(ValueError, match="clip thresholds"):
        tinker_loss("cispo", lp, rl, {"clip_low_threshold": 1.5, "clip_high_threshold": 1.2})
    # Extra inputs (target_tokens, the cookbook's leftover mask) are ignored.
    loss, _ = tinker_loss(
        "importance_sampling", lp, {**rl, "target_tokens": torch.zeros(3), "mask": torch.ones(3)}
    )
    assert loss.item() == 0.0
