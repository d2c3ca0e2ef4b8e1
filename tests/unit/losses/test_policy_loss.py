"""GRPO loss pieces with expected values worked out by hand (see losses/policy.py)."""

from __future__ import annotations

import math

import pytest
import torch

from tunesmith.losses.policy import clipped_policy_loss, group_advantages, k3_kl


def test_group_advantages_by_hand():
    # Group 1: r = [1, 0, 0, 0]; mean 0.25, deviations [0.75, -0.25, -0.25, -0.25];
    # unbiased variance (0.5625 + 3 * 0.0625) / 3 = 0.25, std 0.5 -> A = [1.5, -0.5, -0.5, -0.5].
    # Group 2: all equal -> every deviation is 0 -> A = 0 (no signal).
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    a = group_advantages(r, eps=1e-12)
    assert torch.allclose(a[0], torch.tensor([1.5, -0.5, -0.5, -0.5]), atol=1e-6)
    assert torch.equal(a[1], torch.zeros(4))
    # Default eps 1e-4 in the denominator: 0.75 / 0.5001.
    assert group_advantages(r)[0, 0].item() == pytest.approx(0.75 / 0.5001, rel=1e-6)
    # Dr. GRPO: centre only.
    assert torch.allclose(group_advantages(r, scale=False)[0], torch.tensor([0.75, -0.25, -0.25, -0.25]))
    # Advantages of a group sum to zero.
    assert group_advantages(torch.tensor([[3.0, 1.0, 0.5]])).sum().abs().item() < 1e-6


def test_group_advantages_needs_a_group():
    with pytest.raises(ValueError):
        group_advantages(torch.tensor([[1.0], [0.0]]))


def test_k3_by_hand_and_its_gradient():
    # pi = 0.5, pi_ref = 0.25: d = log(0.25 / 0.5) = -ln 2; k3 = e^d - d - 1 = 0.5 + ln 2 - 1.
    logp = torch.tensor([math.log(0.5), math.log(0.3)], requires_grad=True)
    ref = torch.tensor([math.log(0.25), math.log(0.3)])
    kl = k3_kl(logp, ref)
    assert kl[0].item() == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)  # 0.19315
    assert kl[1].item() == pytest.approx(0.0, abs=1e-7)  # equal probabilities: no divergence
    kl.sum().backward()
    # d k3 / d logp = 1 - e^d = 1 - 0.5: positive, so descent lowers the over-weighted token.
    assert logp.grad[0].item() == pytest.approx(0.5, abs=1e-6)
    assert logp.grad[1].item() == pytest.approx(0.0, abs=1e-6)


def _one_token_cases(epsilon_high=None):
    """Four completions of one token each, ratios 1.5, 0.5, 0.5, 1.5 with A = +1, +1, -1, -1."""
    ratios = torch.tensor([1.5, 0.5, 0.5, 1.5])
    old = torch.zeros(4, 1)
    logp = torch.log(ratios)[:, None].clone().requires_grad_(True)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss, m = clipped_policy_loss(
        logp, old, adv, torch.ones(4, 1), epsilon_low=0.2, epsilon_high=epsilon_high
    )
    loss.backward()
    return loss, m, logp.grad[:, 0]


def test_clip_both_sides_by_hand():
    loss, m, grad = _one_token_cases()
    # Per token  -min(rho*A, clip(rho, 0.8, 1.2)*A):
    #   rho 1.5, A +1: min(1.5, 1.2)  =  1.2 -> -1.2, clipped (high): gradient 0
    #   rho 0.5, A +1: min(0.5, 0.8)  =  0.5 -> -0.5, not clipped: d/dlogp = -rho*A = -0.5
    #   rho 0.5, A -1: min(-0.5, -0.8) = -0.8 -> 0.8, clipped (low): gradient 0
    #   rho 1.5, A -1: min(-1.5, -1.2) = -1.5 -> 1.5, not clipped: d/dlogp = +1.5
    # One token each, so the per-completion mean is the token value; sum = -1.2-0.5+0.8+1.5 = 0.6.
    assert loss.item() == pytest.approx(0.6, abs=1e-6)
    assert torch.allclose(grad, torch.tensor([0.0, -0.5, 0.0, 1.5]), atol=1e-6)
    assert m["clipped_high"].item() == 1 and m["clipped_low"].item() == 1
    assert m["completion_tokens"].item() == 4
    # The ratio is reported whether or not it was clipped: 1.5 + 0.5 + 0.5 + 1.5 = 4.
    assert m["ratio"].item() == pytest.approx(4.0, abs=1e-6)


def test_clip_higher_widens_the_upper_side_only():
    # epsilon_high 0.6: rho 1.5 < 1.6 is no longer clipped: -1.5 with gradient -1.5; the rest as above.
    loss, m, grad = _one_token_cases(epsilon_high=0.6)
    assert loss.item() == pytest.approx(-1.5 - 0.5 + 0.8 + 1.5, abs=1e-6)
    assert torch.allclose(grad, torch.tensor([-1.5, -0.5, 0.0, 1.5]), atol=1e-6)
    assert m["clipped_high"].item() == 0 and m["clipped_low"].item() == 1


def _two_completions(normalization, max_tokens=None):
    # Completion 0 has two tokens (A = +1), completion 1 one token plus padding (A = -1).
    # On-policy (old = logp.detach()): rho = 1, so each token's loss is -A.
    logp = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, m = clipped_policy_loss(
        logp,
        logp.detach(),
        torch.tensor([1.0, -1.0]),
        mask,
        normalization=normalization,
        max_tokens=max_tokens,
    )
    loss.backward()
    return loss, m, logp.grad


def test_sequence_normalisation_means_each_completion():
    loss, m, grad = _two_completions("sequence")
    # Completion 0: (-1 - 1) / 2 = -1; completion 1: +1 / 1 = 1; sum 0.
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    # Gradient = -A / |o_i| per real token; the padding slot gets none. The sign is the policy
    # gradient's: descent raises log-probs of the positive completion, lowers the negative one.
    assert torch.allclose(grad, torch.tensor([[-0.5, -0.5], [1.0, 0.0]]))
    assert m["clipped_low"].item() == 0 and m["clipped_high"].item() == 0
    assert m["completion_tokens"].item() == 3
    assert m["ratio"].item() == 3.0  # rho = 1 on each of the 3 real tokens; padding excluded


def test_constant_normalisation_is_dr_grpo():
    loss, _, grad = _two_completions("constant", max_tokens=4)
    # Token sums / 4: (-2) / 4 + 1 / 4 = -0.25; every real token's gradient is -A / 4.
    assert loss.item() == pytest.approx(-0.25, abs=1e-7)
    assert torch.allclose(grad, torch.tensor([[-0.25, -0.25], [0.25, 0.0]]))


def test_kl_penalty_adds_beta_k3_and_reports_the_kl():
    logp = torch.tensor([[math.log(0.5)]], requires_grad=True)
    ref = torch.tensor([[math.log(0.25)]])
    # A = 0: the surrogate is 0; the loss is beta * k3 = 0.1 * (0.5 + ln 2 - 1) = 0.0193147.
    loss, m = clipped_policy_loss(
        logp, logp.detach(), torch.zeros(1), torch.ones(1, 1), beta=0.1, ref_logp=ref
    )
    loss.backward()
    assert loss.item() == pytest.approx(0.1 * (0.5 + math.log(2) - 1), abs=1e-7)
    assert m["kl"].item() == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)
    assert logp.grad.item() == pytest.approx(0.1 * 0.5, abs=1e-7)  # beta * (1 - pi_ref/pi)
    # beta 0 with a reference: measured, not penalised.
    loss0, m0 = clipped_policy_loss(logp, logp.detach(), torch.zeros(1), torch.ones(1, 1), ref_logp=ref)
    assert loss0.item() == 0.0 and m0["kl"].item() == pytest.approx(m["kl"].item())
    # Padding does not count towards the KL.
    _, mp = clipped_policy_loss(
        torch.zeros(1, 2),
        torch.zeros(1, 2),
        torch.zeros(1),
        torch.tensor([[1.0, 0.0]]),
        ref_logp=torch.tensor([[0.0, -5.0]]),
    )
    assert mp["kl"].item() == 0.0


def test_argument_errors():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="ref_logp"):
        clipped_policy_loss(z, z, torch.zeros(2), z, beta=0.1)
    with pytest.raises(ValueError, match="max_tokens"):
        clipped_policy_loss(z, z, torch.zeros(2), z, normalization="constant")
    with pytest.raises(ValueError, match="shape"):
        clipped_policy_loss(z, z, torch.zeros(3), z)
