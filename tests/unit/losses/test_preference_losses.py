"""Preference, KTO and Bradley–Terry losses against values worked out by hand.

σ(2) = 0.880797, log σ(2) = −0.126928, log σ(−2) = −2.126928, σ(−2) = 0.119203.
"""

from __future__ import annotations

import math

import pytest
import torch

from tunesmith.losses.preference import (
    PairLogps,
    apo_zero_loss,
    hinge_loss,
    ipo_loss,
    kto_loss,
    log_odds,
    orpo_loss,
    robust_loss,
    sigmoid_loss,
    simpo_loss,
)
from tunesmith.losses.reward import bradley_terry_loss

LOG2 = math.log(2)


def t(*xs, grad=False):
    return torch.tensor(xs, dtype=torch.float64, requires_grad=grad)


def test_dpo_sigmoid_value_and_gradient_sign():
    # π_c=−10, ρ_c=−20, π_r=−20, ρ_r=−10: h = (−10+20) − (−20+10) = 20; β=0.1 -> βh = 2
    # loss = −log σ(2) = log(1 + e^−2) = 0.126928
    pc, pr = t(-10.0, grad=True), t(-20.0, grad=True)
    loss, m = sigmoid_loss(PairLogps(pc, pr, t(-20.0), t(-10.0)), beta=0.1)
    assert float(loss) == pytest.approx(0.126928, abs=1e-6)
    loss.backward()
    # ∂/∂π_c = −β σ(−βh) = −0.1 · 0.119203: raising the chosen log-prob lowers the loss
    assert float(pc.grad) == pytest.approx(-0.0119203, abs=1e-7)
    assert float(pr.grad) == pytest.approx(+0.0119203, abs=1e-7)
    # rewards β(π−ρ): chosen 0.1·10 = 1, rejected 0.1·(−10) = −1, margin 2
    assert float(m["rewards_chosen"]) == pytest.approx(1.0) and float(m["rewards_rejected"]) == pytest.approx(
        -1.0
    )
    assert float(m["margin"]) == pytest.approx(2.0) and int(m["correct"]) == 1
    assert float(m["logps_chosen"]) == -10.0 and float(m["logps_rejected"]) == -20.0


def test_dpo_sigmoid_at_zero_margin_is_log2_and_sums_over_pairs():
    # h = 0 for both pairs: 2 · (−log σ(0)) = 2 log 2; two ties count one half each (chance level)
    loss, m = sigmoid_loss(PairLogps(t(-5.0, -7.0), t(-5.0, -7.0), t(-3.0, -1.0), t(-3.0, -1.0)), beta=0.1)
    assert float(loss) == pytest.approx(2 * LOG2)
    assert float(m["correct"]) == 1.0


def test_conservative_and_robust_dpo():
    # h = 20, β = 0.1, ε = 0.1
    # cDPO: −0.9 log σ(2) − 0.1 log σ(−2) = 0.9·0.126928 + 0.1·2.126928 = 0.326928
    loss, _ = sigmoid_loss(PairLogps(t(-10.0), t(-20.0), t(-20.0), t(-10.0)), beta=0.1, label_smoothing=0.1)
    assert float(loss) == pytest.approx(0.326928, abs=1e-6)
    # rDPO: [−0.9 log σ(2) + 0.1 log σ(−2)] / 0.8 = (0.114235 − 0.212693) / 0.8 = −0.123072
    loss, _ = robust_loss(PairLogps(t(-10.0), t(-20.0), t(-20.0), t(-10.0)), beta=0.1, label_smoothing=0.1)
    assert float(loss) == pytest.approx(-0.123072, abs=1e-6)
    # at h = 0: [0.9 log 2 − 0.1 log 2] / 0.8 = log 2
    loss, _ = robust_loss(PairLogps(t(0.0), t(0.0), t(0.0), t(0.0)), beta=0.1, label_smoothing=0.1)
    assert float(loss) == pytest.approx(LOG2)


def test_ipo_and_hinge():
    # IPO: (h − 1/(2β))² = (20 − 5)² = 225; ∂/∂π_c = 2(h − 5) = 30 (h overshoots: pushed back)
    pc = t(-10.0, grad=True)
    loss, _ = ipo_loss(PairLogps(pc, t(-20.0), t(-20.0), t(-10.0)), beta=0.1)
    assert float(loss) == pytest.approx(225.0)
    loss.backward()
    assert float(pc.grad) == pytest.approx(30.0)
    # hinge: max(0, 1 − βh): h = 20 -> max(0, −1) = 0; h = 5 -> 1 − 0.5 = 0.5, ∂/∂π_c = −β
    loss, _ = hinge_loss(PairLogps(t(-10.0), t(-20.0), t(-20.0), t(-10.0)), beta=0.1)
    assert float(loss) == 0.0
    pc = t(-15.0, grad=True)
    loss, _ = hinge_loss(PairLogps(pc, t(-20.0), t(-20.0), t(-20.0)), beta=0.1)
    assert float(loss) == pytest.approx(0.5)
    loss.backward()
    assert float(pc.grad) == pytest.approx(-0.1)


def test_ipo_length_normalized():
    """IPO with length_normalize (TRL's convention): h = (π_c − ρ_c)/|y_c| − (π_r − ρ_r)/|y_r|.

    π_c = −10, ρ_c = −20 over |y_c| = 5 tokens -> 10/5 = 2; π_r = −20, ρ_r = −10 over |y_r| = 4
    -> −10/4 = −2.5; h = 4.5. β = 0.1 -> target 1/(2β) = 5: L = (4.5 − 5)² = 0.25.
    ∂L/∂π_c = 2(h − 5) · 1/|y_c| = 2 · (−0.5) / 5 = −0.2; ∂L/∂π_r = 2(h − 5) · (−1/|y_r|) = +0.25.
    Rewards β · ratio: chosen 0.1 · 2 = 0.2, rejected 0.1 · (−2.5) = −0.25, margin 0.45.
    The same pair summed (the default) is (20 − 5)² = 225 (test_ipo_and_hinge).
    """
    pc, pr = t(-10.0, grad=True), t(-20.0, grad=True)
    pair = PairLogps(pc, pr, t(-20.0), t(-10.0), chosen_tokens=t(5.0), rejected_tokens=t(4.0))
    loss, m = ipo_loss(pair, beta=0.1, length_normalize=True)
    assert float(loss) == pytest.approx(0.25)
    assert float(m["rewards_chosen"]) == pytest.approx(0.2) and float(m["rewards_rejected"]) == pytest.approx(
        -0.25
    )
    assert float(m["margin"]) == pytest.approx(0.45)
    loss.backward()
    assert float(pc.grad) == pytest.approx(-0.2) and float(pr.grad) == pytest.approx(0.25)
    assert float(ipo_loss(pair, beta=0.1)[0]) == pytest.approx(225.0)


def test_apo_zero():
    """APO-zero: L = (1 − σ(β r_c)) + σ(β r_r), r = π − ρ.

    π_c = −10, ρ_c = −20 -> r_c = 10; π_r = −20, ρ_r = −10 -> r_r = −10; β = 0.1:
    L = 1 − σ(1) + σ(−1) = 2 σ(−1) = 2 · 0.268941 = 0.537883.
    ∂L/∂π_c = −β σ(1) σ(−1) = −0.1 · 0.731059 · 0.268941 = −0.0196612, ∂L/∂π_r = +0.0196612.
    Rewards β r: chosen 1, rejected −1.
    """
    pc, pr = t(-10.0, grad=True), t(-20.0, grad=True)
    loss, m = apo_zero_loss(PairLogps(pc, pr, t(-20.0), t(-10.0)), beta=0.1)
    assert float(loss) == pytest.approx(0.537883, abs=1e-6)
    assert float(m["rewards_chosen"]) == pytest.approx(1.0) and float(m["margin"]) == pytest.approx(2.0)
    loss.backward()
    assert float(pc.grad) == pytest.approx(-0.0196612, abs=1e-7)
    assert float(pr.grad) == pytest.approx(0.0196612, abs=1e-7)
    # Anchored at 0, not at the other answer: policy = reference (r_c = r_r = 0) costs
    # 1 − σ(0) + σ(0) = 1 and still pushes the chosen answer up by β σ(0)² = 0.1 · 0.25 = 0.025.
    pc = t(-5.0, grad=True)
    loss, _ = apo_zero_loss(PairLogps(pc, t(-7.0), t(-5.0), t(-7.0)), beta=0.1)
    assert float(loss) == pytest.approx(1.0)
    loss.backward()
    assert float(pc.grad) == pytest.approx(-0.025)


def test_simpo():
    # β=2, γ=1: chosen −10 over 5 tokens -> reward 2·(−2) = −4; rejected −30 over 10 -> −6
    # loss = −log σ(−4 + 6 − 1) = −log σ(1) = log(1 + e^−1) = 0.313262
    pc = t(-10.0, grad=True)
    loss, m = simpo_loss(
        PairLogps(pc, t(-30.0), chosen_tokens=t(5.0), rejected_tokens=t(10.0)), beta=2.0, gamma=1.0
    )
    assert float(loss) == pytest.approx(0.313262, abs=1e-6)
    assert float(m["margin"]) == pytest.approx(2.0) and int(m["correct"]) == 1
    loss.backward()
    # ∂/∂π_c = −σ(−1) · β/|y_c| = −0.268941 · 0.4 = −0.107576
    assert float(pc.grad) == pytest.approx(-0.107576, abs=1e-6)


def test_orpo():
    # chosen −2 over 2 tokens (mean −1), rejected −6 over 3 (mean −2)
    # log odds(ℓ) = ℓ − log(1 − e^ℓ): (−1) -> −1 + 0.458675 = −0.541325; (−2) -> −2 + 0.145413 = −1.854587
    assert float(log_odds(t(-1.0))) == pytest.approx(-0.541325, abs=1e-6)
    # ratio = 1.313262; −log σ(1.313262) = log(1 + 0.268941) = 0.238183
    # L = nll + β·0.238183 = 1 + 0.0238183 (β = 0.1)
    pc, pr = t(-2.0, grad=True), t(-6.0, grad=True)
    loss, m = orpo_loss(PairLogps(pc, pr, chosen_tokens=t(2.0), rejected_tokens=t(3.0)), beta=0.1)
    assert float(loss) == pytest.approx(1.0238183, abs=1e-6)
    assert float(m["nll"]) == pytest.approx(1.0) and float(m["log_odds_ratio"]) == pytest.approx(
        1.313262, abs=1e-6
    )
    loss.backward()
    assert float(pc.grad) < -0.5 and float(pr.grad) > 0  # SFT + odds term raise chosen, lower rejected


def test_kto():
    # β=0.1, π=−10, ρ=−20 -> r = 10; KL estimate 2 -> z₀ = 2
    # desirable: 1 − σ(0.1·(10 − 2)) = 1 − σ(0.8) = 0.310026
    # undesirable: 1 − σ(0.1·(2 − 10)) = 1 − σ(−0.8) = 0.689974
    pol = t(-10.0, -10.0, grad=True)
    loss, m = kto_loss(pol, t(-20.0, -20.0), torch.tensor([True, False]), t(2.0), beta=0.1)
    assert float(loss) == pytest.approx(0.310026 + 0.689974, abs=1e-6)
    assert int(m["correct"]) == 1 and float(m["n_desirable"]) == 1.0
    assert float(m["rewards_desirable"]) == pytest.approx(1.0) and float(
        m["rewards_undesirable"]
    ) == pytest.approx(1.0)
    loss.backward()
    # ∂/∂π: desirable −β σ(0.8)σ(−0.8) < 0 (raise it); undesirable +β σ(−0.8)σ(0.8) > 0 (lower it)
    s = 0.1 * 0.689974 * 0.310026
    assert pol.grad.tolist() == pytest.approx([-s, s], abs=1e-7)
    # class weights scale the terms; a negative KL estimate is clamped to z₀ = 0 (1 − σ(1) = 0.268941)
    loss, _ = kto_loss(t(-10.0), t(-20.0), torch.tensor([True]), t(-3.0), beta=0.1, desirable_weight=2.0)
    assert float(loss) == pytest.approx(2 * 0.268941, abs=1e-6)


def test_bradley_terry():
    # r_c = 2, r_r = 0: −log σ(2) = 0.126928; with margin 1: −log σ(1) = 0.313262
    rc = t(2.0, grad=True)
    loss, m = bradley_terry_loss(rc, t(0.0))
    assert float(loss) == pytest.approx(0.126928, abs=1e-6)
    assert int(m["correct"]) == 1 and float(m["margin"]) == 2.0
    loss.backward()
    assert float(rc.grad) == pytest.approx(-0.119203, abs=1e-6)  # push the chosen reward up
    loss, _ = bradley_terry_loss(t(2.0), t(0.0), margin=t(1.0))
    assert float(loss) == pytest.approx(0.313262, abs=1e-6)
    loss, m = bradley_terry_loss(
        t(0.0, 1.0), t(1.0, 0.0)
    )  # one right, one wrong: −log σ(−1) − log σ(1) = log(1+e) + log(1+e⁻¹)
    assert int(m["correct"]) == 1
    assert float(loss) == pytest.approx(
        -math.log(1 / (1 + math.e)) + -math.log(1 / (1 + math.exp(-1))), abs=1e-9
    )


@pytest.mark.parametrize("ell", [-0.01, -1e-3, -1e-4, -0.5, -0.7, -5.0])
def test_orpo_log_odds_is_accurate_in_float32_near_zero(ell):
    # log odds(ℓ) = ℓ − log(1 − e^ℓ), d/dℓ = 1 / (1 − e^ℓ), in float64 as the reference.
    # log1p(−exp(ℓ)) alone cancels in float32 as ℓ → 0 (issue 17: ORPO's gradient vs TRL).
    import math

    x = torch.tensor(ell, dtype=torch.float32, requires_grad=True)
    value = log_odds(x)
    value.backward()
    want = ell - math.log(-math.expm1(ell))
    want_grad = 1.0 / (-math.expm1(ell))
    assert float(value) == pytest.approx(want, rel=1e-6)
    assert float(x.grad) == pytest.approx(want_grad, rel=1e-5)
