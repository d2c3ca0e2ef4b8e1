"""Fused chunked per-token log-probs == log_softmax of the full logits, values and gradients."""

from __future__ import annotations

import pytest
import torch

from tunesmith.losses.head import LogitTransform
from tunesmith.losses.logprobs import linear_token_logprobs, sequence_sums


def _reference(h, w, b, y, softcap, scale):
    z = (h @ w.t() + (b if b is not None else 0)) * scale
    if softcap is not None:
        z = torch.tanh(z / softcap) * softcap
    return torch.log_softmax(z.float(), -1).gather(1, y[:, None]).squeeze(1)


@pytest.mark.parametrize("train_head", [False, True])
@pytest.mark.parametrize("softcap,scale,bias", [(None, 1.0, False), (5.0, 0.5, True)])
def test_matches_log_softmax(train_head, softcap, scale, bias):
    torch.manual_seed(0)
    h = torch.randn(13, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(21, 8, dtype=torch.float64, requires_grad=train_head)
    b = torch.randn(21, dtype=torch.float64, requires_grad=train_head) if bias else None
    y = torch.randint(0, 21, (13,))
    upstream = torch.randn(13, dtype=torch.float64)  # per-token weights, as a sequence sum would give
    got = linear_token_logprobs(h, w, y, bias=b, chunk_size=4, transform=LogitTransform(scale, softcap))
    want = _reference(h, w, b, y, softcap, scale)
    assert torch.allclose(got.double(), want.double(), atol=1e-5)
    params = [h] + ([w] + ([b] if bias else []) if train_head else [])
    g_got = torch.autograd.grad((got.double() * upstream).sum(), params)
    g_want = torch.autograd.grad((want.double() * upstream).sum(), params)
    for a, e in zip(g_got, g_want):
        assert torch.allclose(a.double(), e.double(), atol=1e-5)


def test_sequence_sums():
    v = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert sequence_sums(v, torch.tensor([0, 2, 0, 2]), 3).tolist() == [4.0, 0.0, 6.0]
