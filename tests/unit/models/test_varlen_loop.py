"""The CPU loop of tunesmith's varlen attention against stock causal SDPA run on each example
alone with its key/value heads repeated (what transformers does): forward bitwise, gradients
to fp32 rounding, for grouped-query (1, 2 and 3 query heads per key/value head) and MHA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunesmith.models.attention import varlen_attention_forward


class _Module(torch.nn.Module):
    pass


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (6, 2)])
def test_loop_equals_separate_examples(heads, kv_heads):
    torch.manual_seed(0)
    lengths = [5, 17, 1, 9]
    total = sum(lengths)
    q = torch.randn(1, heads, total, 8, requires_grad=True)
    k = torch.randn(1, kv_heads, total, 8, requires_grad=True)
    v = torch.randn(1, kv_heads, total, 8, requires_grad=True)
    bounds = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    grad = torch.randn(1, total, heads, 8)
    out, _ = varlen_attention_forward(_Module(), q, k, v, None, cu_seq_lens_q=bounds)
    assert out.shape == (1, total, heads, 8) and out.is_contiguous()
    out.backward(grad)
    got = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    groups = heads // kv_heads
    pieces = []
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        kk = k[:, :, s:e].repeat_interleave(groups, dim=1)
        vv = v[:, :, s:e].repeat_interleave(groups, dim=1)
        pieces.append(F.scaled_dot_product_attention(q[:, :, s:e], kk, vv, is_causal=True).transpose(1, 2))
    ref = torch.cat(pieces, dim=1)
    assert torch.equal(out, ref)
    ref.backward(grad)
    for mine, theirs in zip(got, (q.grad, k.grad, v.grad)):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


def test_cpu_autocast_attends_in_fp32():
    """Under CPU bf16 autocast the loop attends in fp32 (the fp32 CPU kernel's backward is the
    fast one): q and k as rotary leaves them (fp32) and v as a bf16 linear makes it give exactly
    what the loop gives without autocast on the same values in fp32, and fp32 gradients."""
    torch.manual_seed(0)
    lengths = [7, 12, 3]
    total = sum(lengths)
    q = torch.randn(1, 4, total, 8, requires_grad=True)
    k = torch.randn(1, 2, total, 8, requires_grad=True)
    v = torch.randn(1, 2, total, 8).to(torch.bfloat16).requires_grad_(True)
    bounds = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = varlen_attention_forward(_Module(), q, k, v, None, cu_seq_lens_q=bounds)
    assert out.dtype == torch.float32
    out.sum().backward()
    v32 = v.detach().float().requires_grad_(True)
    q2, k2 = (t.detach().clone().requires_grad_(True) for t in (q, k))
    ref, _ = varlen_attention_forward(_Module(), q2, k2, v32, None, cu_seq_lens_q=bounds)
    assert torch.equal(out, ref)
    ref.sum().backward()
    assert torch.equal(q.grad, q2.grad) and torch.equal(k.grad, k2.grad)
    assert v.grad.dtype == torch.bfloat16 and torch.equal(v.grad, v32.grad.to(torch.bfloat16))
