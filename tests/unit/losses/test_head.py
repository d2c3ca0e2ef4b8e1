"""LogitTransform: the LM head's scale and soft-cap, and the derivative the fused kernels use."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tunesmith.losses.head import IDENTITY, LogitTransform

# Head outputs u [2, 3]; with scale s = 0.5 and cap c = 2, z = 2·tanh(0.5·u / 2) = 2·tanh(u / 4).
U = torch.tensor([[1.0, -2.0, 0.0], [4.0, 0.5, -1.0]])


def test_scaled_softcapped_logits_by_hand():
    """2·tanh(1/4) = 0.4898373, 2·tanh(−1/2) = −0.9242343, 2·tanh(0) = 0,
    2·tanh(1) = 1.5231883, 2·tanh(1/8) = 0.2487060, 2·tanh(−1/4) = −0.4898373."""
    z = LogitTransform(scale=0.5, softcap=2.0)(U)
    want = [[0.4898373, -0.9242343, 0.0], [1.5231883, 0.2487060, -0.4898373]]
    assert z.dtype == torch.float32
    assert z.tolist() == [pytest.approx(row, abs=1e-6) for row in want]
    # No cap: only the scale; identity leaves the values alone (in fp32).
    assert LogitTransform(scale=0.5)(U).tolist() == (0.5 * U).tolist()
    assert IDENTITY(U.half()).dtype == torch.float32 and IDENTITY(U).tolist() == U.tolist()


def test_linear_head_equals_the_transform_of_the_matmul():
    # h [2, 2] and W [3, 2], b [3] chosen so that h Wᵀ + b = U.
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    w = torch.tensor([[1.0, 4.0], [-2.0, 0.5], [0.0, -1.0]])
    t = LogitTransform(scale=0.5, softcap=2.0)
    assert torch.equal(t.linear(h, w, None), t(U))
    b = torch.tensor([1.0, 1.0, 1.0])
    assert torch.equal(t.linear(h, w, b), t(U + 1.0))


def test_derivative_by_hand_and_against_autograd():
    """∂z/∂u = s·(1 − (z/c)²) = 0.5·(1 − tanh²(u/4)): at u = 4, 0.5·(1 − 0.7615942²) = 0.2099872;
    at u = 0, 0.5."""
    t = LogitTransform(scale=0.5, softcap=2.0)
    u = U.clone().requires_grad_(True)
    upstream = torch.tensor([[1.0, -2.0, 3.0], [0.5, 1.0, -1.0]])
    (t(u) * upstream).sum().backward()
    z = t(U)
    got = t.to_head_grad_(upstream.clone(), t.cap_slope(z))
    torch.testing.assert_close(got, u.grad)
    slope = t.to_head_grad_(torch.ones(2, 3), t.cap_slope(z))
    assert slope[1, 0].item() == pytest.approx(0.2099872, abs=1e-6)
    assert slope[0, 2].item() == pytest.approx(0.5, abs=1e-7)
    assert LogitTransform(scale=0.5).cap_slope(z) is None


def test_read_from_the_model_config():
    assert LogitTransform.of(SimpleNamespace()) == IDENTITY
    assert LogitTransform.of(SimpleNamespace(final_logit_softcapping=30.0)) == LogitTransform(1.0, 30.0)
    assert LogitTransform.of(SimpleNamespace(logit_scale=0.0625)) == LogitTransform(0.0625)  # Cohere
    assert LogitTransform.of(SimpleNamespace(logits_scaling=8.0)) == LogitTransform(0.125)  # Granite
