"""linear_cross_entropy: hand-derived values, gradients, chunking."""

from __future__ import annotations

import math

import pytest
import torch

from tunesmith.losses import linear_cross_entropy
from tunesmith.losses.head import LogitTransform

# W maps h=[a, b] to logits [a, b, 0] (V=3, H=2).
W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])


def test_hand_computed_loss_and_gradient():
    """Token 1: h=[1,0], target 0 -> z=[1,0,0]; ℓ = log(e+1+1) − 1 = log(e+2) − 1 = 0.5514447.
    Token 2: h=[0,2], target 1 -> z=[0,2,0]; ℓ = log(1+e²+1) − 2 = 0.2395448.
    Sum = 0.7909895. Both argmaxes hit their targets (correct = 2).
    ∂ℓ₁/∂z = softmax − onehot = [e/(e+2) − 1, 1/(e+2), 1/(e+2)] = [−2/(e+2), 1/(e+2), 1/(e+2)]
           = [−0.4238831, 0.2119416, 0.2119416], and ∂ℓ₁/∂h = (∂ℓ₁/∂z) W = [−0.4238831, 0.2119416].
    """
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    loss, m = linear_cross_entropy(h, W, torch.tensor([0, 1]), chunk_size=1)
    assert loss.item() == pytest.approx(0.5514447 + 0.2395448, abs=1e-6)
    assert int(m["correct"]) == 2 and m["n"] == 2
    loss.backward()
    q = 1 / (math.e + 2)
    assert h.grad[0].tolist() == pytest.approx([-0.4238831, 0.2119416], abs=1e-6)
    assert h.grad[0].tolist() == pytest.approx([-2 * q, q], abs=1e-6)


def test_softcap_hand_computed():
    """Soft-cap c=1: z = tanh([1,0,0]) = [0.7615942, 0, 0]; ℓ = log(e^0.7615942 + 2) − 0.7615942 = 0.6595092."""
    h = torch.tensor([[1.0, 0.0]])
    loss, _ = linear_cross_entropy(h, W, torch.tensor([0]), transform=LogitTransform(softcap=1.0))
    assert loss.item() == pytest.approx(0.6595092, abs=1e-6)


@pytest.mark.parametrize("softcap,scale,chunk", [(None, 1.0, 3), (30.0, 1.0, 4), (None, 0.5, 100)])
def test_matches_autograd_reference(softcap, scale, chunk):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(10, 8, generator=g, requires_grad=True)
    w = torch.randn(17, 8, generator=g, requires_grad=True)
    b = torch.randn(17, generator=g, requires_grad=True)
    y = torch.randint(0, 17, (10,), generator=g)
    loss, _ = linear_cross_entropy(
        h, w, y, bias=b, chunk_size=chunk, transform=LogitTransform(scale, softcap)
    )
    (2.0 * loss).backward()  # a non-unit upstream gradient must be honoured
    got = [t.grad.clone() for t in (h, w, b)]
    for t in (h, w, b):
        t.grad = None
    z = (h @ w.t() + b) * scale
    if softcap is not None:
        z = torch.tanh(z / softcap) * softcap
    ref = torch.nn.functional.cross_entropy(z, y, reduction="sum")
    (2.0 * ref).backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    for a, t in zip(got, (h, w, b)):
        torch.testing.assert_close(a, t.grad, rtol=1e-5, atol=1e-6)


def test_frozen_weight_gets_no_gradient_and_empty_input_is_zero():
    h = torch.randn(3, 2, requires_grad=True)
    loss, _ = linear_cross_entropy(h, W, torch.tensor([0, 1, 2]))
    loss.backward()
    assert W.grad is None and h.grad is not None
    empty, m = linear_cross_entropy(torch.zeros(0, 2), W, torch.zeros(0, dtype=torch.long))
    assert empty.item() == 0.0 and m["n"] == 0
