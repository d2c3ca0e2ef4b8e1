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

That loop is the CPU path and the exact reference. On CUDA the whole batch goes to one varlen
kernel instead (FlashAttention varlen, FlexAttention or nested-tensor SDPA; which one:
``model.attention_kernel``, see :mod:`.varlen_kernels`), with the same semantics.

**Shared prompts** (preference pairs): with the extra keyword ``tunesmith_branches`` — one
``(prefix_len, first_len)`` per segment — a segment laid out ``[prompt | answer A | answer B]``
is attended as the two sequences ``[prompt | A]`` and ``[prompt | B]``: A sees the prompt and
itself, B sees the prompt and itself but never A. Positions in B continue from the prompt
(the collator restarts them), so every hidden state equals that of the separate sequence while
the prompt is computed once. ``first_len == 0`` (or no second branch) is a plain causal segment.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from . import varlen_kernels
from .device import autocast_dtype

NAME = "tunesmith_varlen"


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[B, Hkv, T, D] -> [B, Hkv*groups, T, D] (grouped-query attention)."""
    if groups == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, groups, t, d).reshape(b, h * groups, t, d)


def _eager_segment(q, k, v, scaling, softcap, window, dropout, training, q_pos=None, k_pos=None):
    """Exact causal attention for one segment with optional logit soft-cap and sliding window.

    ``q_pos`` / ``k_pos`` (1-D position tensors) default to ``0..T-1``; a key is visible to a
    query when its position is not later (and, with a window, within ``window`` of it).
    """
    scores = torch.matmul(q, k.transpose(-1, -2)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if q_pos is None:
        q_pos = k_pos = torch.arange(q.shape[-2], device=q.device)
    allowed = k_pos[None, :] <= q_pos[:, None]
    if window is not None:
        allowed &= k_pos[None, :] > q_pos[:, None] - window
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    probs = F.dropout(probs, p=dropout, training=training)
    return torch.matmul(probs, v)


def _causal(q, k, v, scale, softcap, sliding_window, p, training):
    """Causal attention of one plain segment ``[1, H, t, D]``."""
    t = q.shape[-2]
    window = sliding_window if sliding_window and t > sliding_window else None
    if softcap is not None or window is not None:
        return _eager_segment(q, k, v, scale, softcap, window, p, training)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True, scale=scale)


def _second_branch(q, k, v, prefix: int, scale, softcap, sliding_window, p, training):
    """Queries ``q [1, H, b, D]`` of branch B over keys ``k/v [1, H, prefix + b, D]`` (the prompt,
    then B itself): the prompt is fully visible, B causally (bottom-right aligned)."""
    from torch.nn.attention.bias import causal_lower_right

    b, n_keys = q.shape[-2], k.shape[-2]
    window = sliding_window if sliding_window and n_keys > sliding_window else None
    if softcap is not None or window is not None:
        k_pos = torch.arange(n_keys, device=q.device)
        return _eager_segment(q, k, v, scale, softcap, window, p, training, q_pos=k_pos[prefix:], k_pos=k_pos)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=causal_lower_right(b, n_keys), dropout_p=p, scale=scale
    )


def varlen_attention_forward(
    module,
    query,
    key,
    value,
    attention_mask,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q=None,
    softcap=None,
    sliding_window=None,
    tunesmith_branches=None,
    **kwargs,
):
    """Attention over ``[1, H, T, D]`` tensors split into segments by ``cu_seq_lens_q``.

    ``tunesmith_branches``: optional ``(prefix_len, first_len)`` per segment (see the module
    docstring). Returns ``(output [1, T, Hq, D], None)`` like transformers' attention functions.
    """
    if cu_seq_lens_q is None or query.shape[0] != 1:
        return _fallback(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            softcap=softcap,
            sliding_window=sliding_window,
            **kwargs,
        )
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    p = dropout if module.training else 0.0
    bounds = cu_seq_lens_q.tolist() if torch.is_tensor(cu_seq_lens_q) else list(cu_seq_lens_q)
    window = sliding_window or None
    out = varlen_kernels.attend(query, key, value, bounds, tunesmith_branches, scale, softcap, window, p)
    if out is not None:  # one varlen kernel for the whole batch (CUDA; see varlen_kernels)
        return out, None
    varlen_kernels.note_ran("loop", query)
    precision = contextlib.nullcontext()
    if query.device.type == "cpu" and autocast_dtype(query) is not None:
        # CPU autocast: attend in fp32. torch's CPU flash-attention backward in bf16 ran 4-5x
        # slower than in fp32 inside a SmolLM2 LoRA step (bench/README.md, "bf16 on a CPU");
        # the output feeds o_proj, which casts it to autocast's dtype again.
        query, key, value = query.float(), key.float(), value.float()
        precision = torch.autocast("cpu", enabled=False)
    with precision:
        return _loop(module, query, key, value, bounds, tunesmith_branches, scale, softcap, sliding_window, p)


def _loop(module, query, key, value, bounds, tunesmith_branches, scale, softcap, sliding_window, p):
    """The per-example loop over ``[1, H, T, D]`` tensors: ``(output [1, T, Hq, D], None)``."""
    plain = not tunesmith_branches and bounds[0] == 0 and bounds[-1] == query.shape[2]
    sizes = [end - start for start, end in zip(bounds[:-1], bounds[1:])]
    if plain and softcap is None and not (sliding_window and max(sizes) > sliding_window):
        # Plain causal segments: split() views whose backward concatenates the segment
        # gradients (slicing would zero-fill a full-size gradient per segment and add them up:
        # ~6 % of a SmolLM2 LoRA step); grouped-query heads read the shared K/V directly
        # (enable_gqa, no repeated copies, bitwise the same); each output is transposed as it
        # is concatenated, one copy instead of two. ~10 % less attention time on CPU.
        outs = [
            F.scaled_dot_product_attention(
                q, k, v, dropout_p=p, is_causal=True, scale=scale, enable_gqa=True
            ).transpose(1, 2)
            for q, k, v in zip(query.split(sizes, dim=2), key.split(sizes, dim=2), value.split(sizes, dim=2))
        ]
        return (outs[0].contiguous() if len(outs) == 1 else torch.cat(outs, dim=1)), None
    groups = query.shape[1] // key.shape[1]
    key, value = _repeat_kv(key, groups), _repeat_kv(value, groups)
    if plain:
        outs = [
            _causal(q, k, v, scale, softcap, sliding_window, p, module.training)
            for q, k, v in zip(query.split(sizes, dim=2), key.split(sizes, dim=2), value.split(sizes, dim=2))
        ]
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
        return out.transpose(1, 2).contiguous(), None
    branches = tunesmith_branches or [(0, 0)] * (len(bounds) - 1)
    outs = []
    for (start, end), (prefix, first) in zip(zip(bounds[:-1], bounds[1:]), branches):
        split = start + prefix + first  # where the second branch starts
        branched = first > 0 and split < end  # else the segment is one causal span
        stop = split if branched else end  # the causal part: the prompt and the first branch
        outs.append(
            _causal(
                query[:, :, start:stop],
                key[:, :, start:stop],
                value[:, :, start:stop],
                scale,
                softcap,
                sliding_window,
                p,
                module.training,
            )
        )
        if not branched:
            continue
        k = torch.cat([key[:, :, start : start + prefix], key[:, :, split:end]], dim=2)
        v = torch.cat([value[:, :, start : start + prefix], value[:, :, split:end]], dim=2)
        outs.append(
            _second_branch(
                query[:, :, split:end], k, v, prefix, scale, softcap, sliding_window, p, module.training
            )
        )
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def _fallback(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    kwargs.pop("tunesmith_branches", None)
    if kwargs.get("softcap") is not None:
        # SDPA cannot soft-cap; use the model family's own eager attention.
        import importlib

        family = importlib.import_module(type(module).__module__)
        return family.eager_attention_forward(module, query, key, value, attention_mask, **kwargs)
    kwargs.pop("softcap", None)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def register(kernel: str | None = None) -> str:
    """Register the varlen function with transformers (idempotent); returns its name.

    ``kernel`` (``model.attention_kernel``: auto | loop | flex | flash | nested) selects the
    packed kernel for the whole process (:mod:`.varlen_kernels`); None keeps the current one."""
    from transformers import AttentionInterface

    if kernel is not None:
        varlen_kernels.select(kernel)
    AttentionInterface.register(NAME, varlen_attention_forward)
    return NAME


def padding_aware_attention(hf) -> str | None:
    """The stock implementation to generate with when ``hf``'s current attention has no
    padding-mask builder in transformers (None when it has one)."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    current = getattr(hf.config, "_attn_implementation", None)
    if current is None or current in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        return None
    if getattr(hf.config, "attn_logit_softcapping", None) or not getattr(hf, "_supports_sdpa", True):
        return "eager"  # SDPA cannot soft-cap attention logits (Gemma 2)
    return "sdpa"


@contextlib.contextmanager
def padded_attention(model):
    """Generate left-padded batches with a padding-aware attention; restored afterwards.

    The varlen function registered here serves packed batches (``cu_seq_lens``) and defers to
    SDPA otherwise, but transformers builds no padding mask for an attention name it does not
    know: left-padded prompts would attend to their padding. Every caller that samples from a
    model set up for training (evaluation, GRPO rollouts, on-policy distillation) wraps its
    ``generate`` in this context.
    """
    from .adapters import unwrap

    hf = unwrap(model)
    switch_to = padding_aware_attention(hf) if hasattr(hf, "set_attn_implementation") else None
    previous = getattr(hf.config, "_attn_implementation", None)
    if switch_to:
        hf.set_attn_implementation(switch_to)
    try:
        yield model
    finally:
        if switch_to:
            hf.set_attn_implementation(previous)
