"""Varlen (padding-free) attention for packed sequences, registered with transformers.

``transformers`` lets a model use any attention function registered in its
``AttentionInterface`` (``attn_implementation="<name>"``); the model passes the ``cu_seq_lens_q``
keyword (cumulative example lengths) down to it. With it, a flattened batch ``[1, T]`` made of
several examples is attended example by example: each segment gets causal SDPA of its own,
so the cost is ``sum(len_i²)`` — what the separate examples cost — never ``T²``, and no
``T × T`` mask is ever built. Without ``cu_seq_lens_q`` (generation, padded batches) it defers
to the stock SDPA / eager functions.

Soft-capped attention (Gemma 2) and sliding windows shorter than a segment take an exact
eager path for that segment.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "tunesmith_varlen"


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[B, Hkv, T, D] -> [B, Hkv*groups, T, D] (grouped-query attention)."""
    if groups == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, groups, t, d).reshape(b, h * groups, t, d)


def _eager_segment(q, k, v, scaling, softcap, window, dropout, training):
    """Exact causal attention for one segment with optional logit soft-cap and sliding window."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    t = q.shape[-2]
    idx = torch.arange(t, device=q.device)
    allowed = idx[None, :] <= idx[:, None]
    if window is not None:
        allowed &= idx[None, :] > idx[:, None] - window
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    probs = F.dropout(probs, p=dropout, training=training)
    return torch.matmul(probs, v)


def varlen_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                             scaling: float | None = None, cu_seq_lens_q=None, softcap=None,
                             sliding_window=None, **kwargs):
    """Attention over ``[1, H, T, D]`` tensors split into segments by ``cu_seq_lens_q``.

    Returns ``(output [1, T, Hq, D], None)`` like transformers' attention functions.
    """
    if cu_seq_lens_q is None or query.shape[0] != 1:
        return _fallback(module, query, key, value, attention_mask, dropout=dropout,
                         scaling=scaling, softcap=softcap, sliding_window=sliding_window, **kwargs)
    groups = query.shape[1] // key.shape[1]
    key, value = _repeat_kv(key, groups), _repeat_kv(value, groups)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    p = dropout if module.training else 0.0
    bounds = cu_seq_lens_q.tolist() if torch.is_tensor(cu_seq_lens_q) else list(cu_seq_lens_q)
    outs = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        q, k, v = query[:, :, start:end], key[:, :, start:end], value[:, :, start:end]
        window = sliding_window if sliding_window and end - start > sliding_window else None
        if softcap is not None or window is not None:
            outs.append(_eager_segment(q, k, v, scale, softcap, window, p, module.training))
        else:
            outs.append(F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True, scale=scale))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def _fallback(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if kwargs.get("softcap") is not None:
        # SDPA cannot soft-cap; use the model family's own eager attention.
        import importlib

        family = importlib.import_module(type(module).__module__)
        return family.eager_attention_forward(module, query, key, value, attention_mask, **kwargs)
    kwargs.pop("softcap", None)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def register() -> str:
    """Register the varlen function with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_attention_forward)
    return NAME
