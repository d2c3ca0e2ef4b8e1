"""Token cross-entropy fused with the LM head, computed in chunks of supervised positions.

Only positions whose next token is supervised reach this function (``hidden`` is already
gathered to ``[N, H]``), and the ``[N, V]`` logits are never materialised at once: each chunk of
``chunk_size`` rows computes its logits, its loss and — when gradients are needed — its
gradients right away (the softmax-minus-one-hot trick), then frees the logits. Peak extra memory
is one ``[chunk_size, V]`` block instead of ``[T, V]`` logits plus their log-softmax.

For logits ``z`` (the head's scale and soft-cap: :class:`.head.LogitTransform`) and target ``y``,
the per-token loss is ``ℓ = logsumexp(z) − z_y`` and ``∂ℓ/∂z = softmax(z) − onehot(y)``; the
transform carries it back to the head outputs ``u = h Wᵀ + b``.
"""

from __future__ import annotations

import torch

from .head import IDENTITY, LinearHeadGrads, LogitTransform


class _LinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size, transform):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        grads = LinearHeadGrads(hidden, weight, bias, (need_h, need_w, need_b))
        for s in range(0, hidden.shape[0], chunk_size):
            h, y = hidden[s : s + chunk_size], targets[s : s + chunk_size]
            z = transform.linear(h, weight, bias)
            lse = torch.logsumexp(z, dim=-1)
            rows = torch.arange(z.shape[0], device=z.device)
            loss += (lse - z[rows, y]).sum()
            correct += (z.argmax(dim=-1) == y).sum()
            if not grads.needed:
                continue
            slope = transform.cap_slope(z)  # before z is overwritten
            g = z.sub_(lse[:, None]).exp_()  # softmax, in place of z (z is not needed after)
            g[rows, y] -= 1.0
            grads.add(s, transform.to_head_grad_(g, slope).to(hidden.dtype), h, weight)
        ctx.save_for_backward(*(t for t in (grads.hidden, grads.weight, grads.bias) if t is not None))
        ctx.has = (need_h, need_w, need_b)
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_correct):
        saved = iter(ctx.saved_tensors)
        need_h, need_w, need_b = ctx.has
        gh = next(saved) * grad_loss.to(ctx.saved_tensors[0].dtype) if need_h else None
        gw = next(saved) * grad_loss if need_w else None
        gb = next(saved) * grad_loss if need_b else None
        return gh, gw, gb, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    chunk_size: int = 1024,
    transform: LogitTransform = IDENTITY,
):
    """Summed token cross-entropy of ``transform(hidden @ weightᵀ + bias)`` against targets.

    Args:
        hidden: ``[N, H]`` final hidden states at the supervised positions.
        weight: ``[V, H]`` LM-head weight (may be frozen: its gradient is then skipped).
        targets: ``[N]`` token ids to predict.
    Returns:
        ``(loss_sum, metrics)``: the *sum* over the N tokens (the caller divides by the token
        count of the whole accumulation window) and ``{"correct": #argmax hits, "n": N}``.
    """
    if hidden.shape[0] == 0:
        zero = hidden.sum() * 0.0 + weight.sum() * 0.0  # keeps the graph connected
        return zero.float(), {"correct": torch.zeros((), dtype=torch.long), "n": 0}
    loss, correct = _LinearCE.apply(hidden, weight, bias, targets, chunk_size, transform)
    return loss, {"correct": correct, "n": int(targets.shape[0])}
