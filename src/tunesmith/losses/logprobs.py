"""Per-token log-probabilities of target tokens, fused with the LM head and chunked.

Preference losses need ``log π(y_t | x, y_<t)`` for every supervised token, summed per
sequence — not one summed cross-entropy. As in :mod:`.token_ce`, only the supervised
positions reach this function (``hidden [N, H]``) and the ``[N, V]`` logits are only ever
materialised ``chunk_size`` rows at a time.

For logits ``z`` (the head's scale and soft-cap: :class:`.head.LogitTransform`) the output is
``ℓ = z_y − logsumexp(z)`` and ``∂ℓ/∂z = onehot(y) − softmax(z)``. When the head weight is
frozen (adapters) the gradient with respect to ``hidden`` is linear in the per-token upstream
gradient, so ``(onehot − softmax) · ∂z/∂u @ W`` is computed once in the forward pass and
scaled in the backward; when the weight is trained too (full fine-tuning) the backward
recomputes each chunk's logits instead of keeping them.
"""

from __future__ import annotations

import torch

from .head import IDENTITY, LinearHeadGrads, LogitTransform


def _chunk_dlogp_du(z, lse, y, transform: LogitTransform):
    """∂ℓ/∂u for one chunk (u = h Wᵀ + b, before scale and cap): ``[n, V]`` fp32."""
    rows = torch.arange(z.shape[0], device=z.device)
    slope = transform.cap_slope(z)
    g = (z - lse[:, None]).exp_().neg_()  # −softmax
    g[rows, y] += 1.0
    return transform.to_head_grad_(g, slope)


class _LinearLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size, transform):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        # Frozen head: precompute ∂ℓ/∂h per token now (see the module docstring).
        grad_h = torch.empty_like(hidden) if need_h and not (need_w or need_b) else None
        for s in range(0, hidden.shape[0], chunk_size):
            h, y = hidden[s : s + chunk_size], targets[s : s + chunk_size]
            z = transform.linear(h, weight, bias)
            lse = torch.logsumexp(z, dim=-1)
            out[s : s + chunk_size] = z.gather(1, y[:, None]).squeeze(1) - lse
            if grad_h is not None:
                grad_h[s : s + chunk_size] = _chunk_dlogp_du(z, lse, y, transform).to(hidden.dtype) @ weight
        ctx.chunk_size, ctx.transform = chunk_size, transform
        ctx.has = (need_h, need_w, need_b)
        if grad_h is not None:
            ctx.save_for_backward(grad_h)
            ctx.precomputed = True
        else:
            ctx.save_for_backward(hidden, weight, bias, targets)
            ctx.precomputed = False
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.precomputed:
            (grad_h,) = ctx.saved_tensors
            return grad_h * grad_out[:, None].to(grad_h.dtype), None, None, None, None, None
        hidden, weight, bias, targets = ctx.saved_tensors
        grads = LinearHeadGrads(hidden, weight, bias, ctx.has)
        cs = ctx.chunk_size
        for s in range(0, hidden.shape[0], cs):
            h, y = hidden[s : s + cs], targets[s : s + cs]
            z = ctx.transform.linear(h, weight, bias)
            lse = torch.logsumexp(z, dim=-1)
            g = _chunk_dlogp_du(z, lse, y, ctx.transform) * grad_out[s : s + cs, None].float()
            grads.add(s, g.to(hidden.dtype), h, weight)
        grad_w = grads.weight.to(weight.dtype) if grads.weight is not None else None
        grad_b = grads.bias.to(bias.dtype) if grads.bias is not None else None
        return grads.hidden, grad_w, grad_b, None, None, None


def linear_token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    chunk_size: int = 1024,
    transform: LogitTransform = IDENTITY,
) -> torch.Tensor:
    """``log softmax(transform(hidden @ weightᵀ + bias))[targets]`` per row, fp32.

    Args:
        hidden: ``[N, H]`` final hidden states at the positions that predict ``targets``.
        weight: ``[V, H]`` LM-head weight; bias ``[V]`` or None.
        targets: ``[N]`` token ids.
    Returns:
        ``[N]`` float32 log-probabilities (differentiable in hidden, weight and bias).
    """
    if hidden.shape[0] == 0:
        return (hidden.sum() * 0.0 + weight.sum() * 0.0).float().reshape(1)[:0]
    return _LinearLogprobs.apply(hidden, weight, bias, targets, chunk_size, transform)


def sequence_sums(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Sum ``values [N]`` into ``n`` bins by ``index [N]`` (sequence ids) -> ``[n]``."""
    return values.new_zeros(n).index_add(0, index, values)
