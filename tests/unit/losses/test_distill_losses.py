"""Distillation divergences (losses/distill.py) against values worked out by hand.

Running example (two outcomes): teacher p = (1/2, 1/2), student q = (1/4, 3/4)
(student logits (0, ln 3): softmax = (1, 3)/4).
"""

from __future__ import annotations

import math

import pytest
import torch

from tunesmith.losses.distill import (
    distill_loss,
    divergence,
    forward_kl,
    gather_with_tail,
    generalized_jsd,
    reverse_kl,
    tempered_log_probs,
    topk_with_tail,
)

P = torch.tensor([[0.5, 0.5]]).log()
Q = torch.tensor([[0.25, 0.75]]).log()


def test_forward_kl_by_hand():
    # KL(p‖q) = ½ ln(½ / ¼) + ½ ln(½ / ¾) = ½ ln 2 + ½ ln(2/3) = ½ ln(4/3) = 0.1438410
    assert forward_kl(Q, P).item() == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)
    assert forward_kl(Q, P).item() == pytest.approx(0.1438410, abs=1e-6)


def test_reverse_kl_by_hand():
    # KL(q‖p) = ¼ ln(¼ / ½) + ¾ ln(¾ / ½) = −¼ ln 2 + ¾ ln(3/2) = −0.1732868 + 0.3040988 = 0.1308120
    assert reverse_kl(Q, P).item() == pytest.approx(0.1308120, abs=1e-6)


def test_jsd_half_by_hand():
    # m = ½p + ½q = (3/8, 5/8)
    # KL(p‖m) = ½ ln(4/3) + ½ ln(4/5) = ½ ln(16/15) = 0.0322692
    # KL(q‖m) = ¼ ln(2/3) + ¾ ln(6/5) = −0.1013663 + 0.1367412 = 0.0353749
    # JSD_½ = ½ (0.0322693 + 0.0353749) = 0.0338221
    assert generalized_jsd(Q, P, 0.5).item() == pytest.approx(0.0338221, abs=1e-6)


def test_jsd_endpoints_match_the_kls():
    # Exactly at the ends JSD is defined as forward / reverse KL ...
    assert generalized_jsd(Q, P, 0.0).item() == pytest.approx(0.1438410, abs=1e-6)
    assert generalized_jsd(Q, P, 1.0).item() == pytest.approx(0.1308120, abs=1e-6)
    # ... which are the limits of the interior: JSD_β / β -> KL(p‖q) as β -> 0 and
    # JSD_β / (1 − β) -> KL(q‖p) as β -> 1 (first-order expansion of m around q resp. p;
    # the error is O(β), so β = 1e-4 agrees to ~1e-5).
    eps = 1e-4
    assert (generalized_jsd(Q.double(), P.double(), eps) / eps).item() == pytest.approx(0.1438410, abs=5e-5)
    assert (generalized_jsd(Q.double(), P.double(), 1 - eps) / eps).item() == pytest.approx(
        0.1308120, abs=5e-5
    )


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_zero_when_student_equals_teacher(kind):
    logits = torch.randn(5, 11)
    logp = tempered_log_probs(logits)
    assert divergence(kind, logp, logp, 0.3).abs().max().item() < 1e-6
    loss, m = distill_loss(logits, None, teacher_logits=logits.clone(), alpha=0.0, kind=kind, temperature=2.0)
    assert abs(loss.item()) < 1e-5 and m["agree"].item() == 5 and m["n"] == 5


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_divergences_are_positive_and_gradient_points_to_teacher(kind):
    torch.manual_seed(0)
    s = torch.randn(4, 7, requires_grad=True)
    t = torch.randn(4, 7)
    loss, _ = distill_loss(s, None, teacher_logits=t, alpha=0.0, kind=kind, beta=0.4)
    assert loss.item() > 0
    loss.backward()
    with torch.no_grad():
        moved, _ = distill_loss(s - 0.1 * s.grad, None, teacher_logits=t, alpha=0.0, kind=kind, beta=0.4)
    assert moved.item() < loss.item()


def test_temperature_and_t_squared_scaling():
    # Teacher logits (0, 0): p = (½, ½) at every T. Student logits (0, ln 3) at T = 2:
    # softmax((0, ln3 / 2)) = (1, √3) / (1 + √3) = (0.3660254, 0.6339746).
    # KL(p‖q_T) = ½ ln(½ (1 + √3)) + ½ ln((1 + √3) / (2√3)) = ln((1 + √3)/2) − ¼ ln 3
    #           = 0.3119054 − 0.2746531 = 0.0372523, and × T² = 4: 0.1490091.
    s = torch.tensor([[0.0, math.log(3)]])
    t = torch.zeros(1, 2)
    expected = 4 * (math.log((1 + math.sqrt(3)) / 2) - 0.25 * math.log(3))
    assert expected == pytest.approx(0.1490091, abs=1e-6)
    loss, m = distill_loss(s, None, teacher_logits=t, alpha=0.0, temperature=2.0)
    assert loss.item() == pytest.approx(0.1490091, abs=1e-6)
    assert m["divergence"].item() == pytest.approx(0.1490091, abs=1e-6)
    # At T = 1 it is the plain KL of the running example, 0.1438410.
    loss1, _ = distill_loss(s, None, teacher_logits=t, alpha=0.0, temperature=1.0)
    assert loss1.item() == pytest.approx(0.1438410, abs=1e-6)


def test_alpha_mixes_ce_on_labels_with_divergence():
    # CE of label 1 under q = (¼, ¾): −ln ¾ = 0.2876821.
    # alpha = ¼: ¼ · 0.2876821 + ¾ · 0.1438410 = 0.0719205 + 0.1078808 = 0.1798013.
    s = torch.tensor([[0.0, math.log(3)]])
    loss, m = distill_loss(s, torch.tensor([1]), teacher_logits=torch.zeros(1, 2), alpha=0.25)
    assert loss.item() == pytest.approx(0.1798013, abs=1e-6)
    assert m["ce"].item() == pytest.approx(0.2876821, abs=1e-6)
    assert m["divergence"].item() == pytest.approx(0.1438410, abs=1e-6)
    # Student argmax 1, teacher logits tie -> argmax 0: no agreement.
    assert m["agree"].item() == 0


def test_topk_with_tail_by_hand():
    # Teacher p = (0.5, 0.3, 0.1, 0.1), k = 2 -> outcomes {0, 1, rest} = (0.5, 0.3, 0.2).
    # Student q = (0.4, 0.2, 0.3, 0.1) coarsened the same way -> (0.4, 0.2, 0.4).
    # KL = 0.5 ln(0.5/0.4) + 0.3 ln(0.3/0.2) + 0.2 ln(0.2/0.4)
    #    = 0.1115718 + 0.1216395 − 0.1386294 = 0.0945819   (0.5 ln 1.25 = 0.1115718)
    p = torch.tensor([[0.5, 0.3, 0.1, 0.1]]).log()
    q = torch.tensor([[0.4, 0.2, 0.3, 0.1]]).log()
    ids, tp = topk_with_tail(p, 2)
    assert ids.tolist() == [[0, 1]]
    assert tp.exp().tolist()[0] == pytest.approx([0.5, 0.3, 0.2], abs=1e-6)
    sq = gather_with_tail(q, ids)
    assert sq.exp().tolist()[0] == pytest.approx([0.4, 0.2, 0.4], abs=1e-6)
    assert forward_kl(sq, tp).item() == pytest.approx(0.0945819, abs=1e-6)
    # Through distill_loss with the cached form (top-k log-probs without the tail):
    loss, m = distill_loss(q, None, teacher_topk=(ids, tp[:, :2]), alpha=0.0)
    assert loss.item() == pytest.approx(0.0945819, abs=1e-6)
    assert m["agree"].item() == 1  # both put most mass on token 0


def test_topk_covering_the_vocabulary_equals_full_divergence():
    torch.manual_seed(1)
    s, t = torch.randn(6, 9), torch.randn(6, 9)
    full, _ = distill_loss(s, None, teacher_logits=t, alpha=0.0, temperature=1.5, kind="jsd")
    ids, tp = topk_with_tail(tempered_log_probs(t, 1.5), 9)
    cached, _ = distill_loss(s, None, teacher_topk=(ids, tp[:, :9]), alpha=0.0, temperature=1.5, kind="jsd")
    assert cached.item() == pytest.approx(full.item(), abs=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="exactly one"):
        distill_loss(torch.zeros(1, 2), None)
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(Q, P, 1.5)
    with pytest.raises(ValueError, match="unknown divergence"):
        divergence("tv", Q, P)
