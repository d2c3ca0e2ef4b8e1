"""Packed (varlen) attention in one kernel call: FlashAttention varlen, FlexAttention, nested SDPA.

:mod:`.attention` attends a flat ``[1, T]`` batch example by example. On CPU that loop is the
exact reference (the invariant tests compare packed == unpacked bitwise through it); on CUDA a
Python loop of one small SDPA call per example leaves the GPU idle between launches, so the
whole batch goes to one kernel instead. Which one (``model.attention_kernel``):

- ``flash``: FlashAttention's ``flash_attn_varlen_func`` (the ``flash_attn`` package, CUDA,
  bf16/fp16). Plain segments are its ``cu_seqlens``; a shared-prompt segment becomes two
  sequences — queries ``[prompt | A]`` over the same keys, and queries ``B`` over the gathered
  keys ``[prompt | B]`` (causal bottom-right aligned) — so the branch layout is expressible.
  Soft-cap, sliding window, GQA and dropout are native.
- ``flex``: PyTorch FlexAttention, compiled, with a block mask built from the segments: a key
  is visible when it is in the query's segment and branch (or the shared prompt), not later,
  and within the sliding window; Gemma-2 soft-capping is a ``score_mod``. No dropout.
- ``nested``: SDPA over a jagged nested tensor (CUDA: its flash / efficient kernels; PyTorch
  has no causal CPU kernel for nested tensors). Plain causal segments only.
- ``loop``: :mod:`.attention`'s per-example loop.
- ``auto`` (default): ``loop`` on CPU; on CUDA the first of flash, flex, nested that can
  express the call (flash only for half-precision inputs, flex not with dropout, nested only
  for plain segments without soft-cap or window), else loop. If FlexAttention fails to compile
  on a machine, ``auto`` logs the error once and uses the next kernel from then on.

A run logs the kernel it will use at INFO (:func:`kernel_for`); :func:`kernels_ran` reports
what actually ran in the process.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from .device import autocast_dtype

log = logging.getLogger("tunesmith")

KERNELS = ("auto", "loop", "flex", "flash", "nested")

_state = {"selected": "auto", "flex_broken": False}
_ran: set[str] = set()


class KernelError(ConfigError):
    """The attention kernel asked for (``model.attention_kernel``) cannot run here or this call;
    the message says what to use instead."""


def select(kernel: str) -> None:
    """Set the process-wide kernel (the run's ``model.attention_kernel``); checks that an
    explicitly named kernel exists in this installation."""
    if kernel not in KERNELS:
        raise KernelError(f"attention kernel {kernel!r} is not one of {', '.join(KERNELS)}")
    if kernel == "flash" and not flash_available():
        raise KernelError(
            "model.attention_kernel: flash needs the flash_attn package (FlashAttention 2 with "
            "flash_attn_varlen_func), which is not installed; use auto or flex"
        )
    _state["selected"] = kernel


def selected() -> str:
    return _state["selected"]


def flash_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def kernels_ran() -> list[str]:
    """``kernel@device`` for every packed-attention kernel (``loop`` included) that ran in this
    process, e.g. ``["flex@cuda"]``."""
    return sorted(_ran)


def kernel_for(device, *, branched=False, softcap=None, window=None, dropout=0.0, half=True) -> str:
    """The kernel the current selection runs for a call with these properties on ``device``
    (``half``: q/k/v in bf16/fp16). ``auto`` is resolved; an explicit choice is returned as is
    and checked when it runs."""
    kernel = _state["selected"]
    if kernel != "auto":
        return kernel
    if torch.device(device).type != "cuda":
        return "loop"
    if flash_available() and half:
        return "flash"
    if dropout == 0 and not _state["flex_broken"]:
        return "flex"
    if not branched and softcap is None and window is None:
        return "nested"
    return "loop"


# ------------------------------------------------------------------------------------------------
# the packed layout, shared by every kernel
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Per-token facts of a packed batch of ``T`` tokens, on the batch's device.

    ``doc [T]``: segment index; ``vpos [T]``: position inside its own sequence (the second
    branch restarts after the prompt); ``branch [T]``: 0 prompt / plain, 1 first answer, 2 second.
    ``q_bounds``: the flash sequences' query boundaries (a branched segment splits at B);
    ``k_index`` (None when keys are the queries) and ``k_bounds``: the gathered keys per sequence.
    """

    doc: torch.Tensor
    vpos: torch.Tensor
    branch: torch.Tensor
    q_bounds: tuple[int, ...]
    k_index: torch.Tensor | None
    k_bounds: tuple[int, ...]
    masks: dict = field(default_factory=dict, compare=False)
    """FlexAttention block masks of this layout, by sliding window."""


def build_layout(bounds, branches, device) -> Layout:
    """The :class:`Layout` of segments ``bounds`` (cumulative, 0 … T) with optional
    ``(prefix_len, first_len)`` branches per segment (see :mod:`.attention`)."""
    branches = branches or [(0, 0)] * (len(bounds) - 1)
    doc, vpos, branch, keys = [], [], [], []
    q_bounds, k_bounds = [0], [0]
    for i, ((start, end), (prefix, first)) in enumerate(zip(zip(bounds[:-1], bounds[1:]), branches)):
        split = start + prefix + first
        branched = first > 0 and split < end
        stop = split if branched else end
        doc += [i] * (end - start)
        vpos += range(stop - start)
        branch += [0] * (prefix if branched else stop - start) + [1] * (first if branched else 0)
        keys += range(start, stop)
        q_bounds.append(stop)
        k_bounds.append(k_bounds[-1] + stop - start)
        if branched:
            vpos += range(prefix, prefix + end - split)
            branch += [2] * (end - split)
            keys += [*range(start, start + prefix), *range(split, end)]
            q_bounds.append(end)
            k_bounds.append(k_bounds[-1] + prefix + end - split)
    as_tensor = functools.partial(torch.tensor, dtype=torch.int32, device=device)
    gathered = len(keys) != bounds[-1] or keys != list(range(bounds[-1]))
    return Layout(
        doc=as_tensor(doc),
        vpos=as_tensor(vpos),
        branch=as_tensor(branch),
        q_bounds=tuple(q_bounds),
        k_index=torch.tensor(keys, dtype=torch.long, device=device) if gathered else None,
        k_bounds=tuple(k_bounds),
    )


class _Cache:
    """The few most recent layouts (with their block masks): every layer of a forward pass (and the
    recomputation of a checkpointed one) attends over the same packed batch, so each is built
    once per step, not once per layer."""

    def __init__(self, size: int = 4):
        self.size, self.items = size, OrderedDict()

    def get(self, key, build):
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = self.items[key] = build()
        if len(self.items) > self.size:
            self.items.popitem(last=False)
        return value


_layouts = _Cache()


def _layout(bounds, branches, device) -> Layout:
    key = (tuple(bounds), tuple(map(tuple, branches or ())), str(device))
    return _layouts.get(key, lambda: build_layout(bounds, branches, device))


# ------------------------------------------------------------------------------------------------
# entry points
# ------------------------------------------------------------------------------------------------


def attend(query, key, value, bounds, branches, scale, softcap, window, dropout):
    """The packed attention of the selected kernel, or None when that is :mod:`.attention`'s
    loop (on CPU under ``auto``; on CUDA when no kernel can express the call)."""
    dtype = _common_dtype(query)
    if bounds[0] != 0 or bounds[-1] != query.shape[2]:
        return None  # tokens outside every segment: only the loop's semantics cover them
    half = dtype in (torch.bfloat16, torch.float16)
    kw = dict(branched=bool(branches), softcap=softcap, window=window, dropout=dropout, half=half)
    kernel = kernel_for(query.device, **kw)
    if kernel == "flex" and _state["selected"] == "auto":
        try:
            return packed_attention(
                kernel, query, key, value, bounds, branches, scale, softcap, window, dropout
            )
        except KernelError:
            raise
        except Exception as exc:  # compiling FlexAttention failed on this machine
            _state["flex_broken"] = True
            log.warning(
                "packed attention: FlexAttention failed (%s: %s); using the next kernel",
                type(exc).__name__,
                exc,
            )
            kernel = kernel_for(query.device, **kw)
    if kernel == "loop":
        return None
    return packed_attention(kernel, query, key, value, bounds, branches, scale, softcap, window, dropout)


def packed_attention(kernel, query, key, value, bounds, branches, scale, softcap, window, dropout):
    """Attention of ``query [1, Hq, T, D]`` over ``key/value [1, Hkv, T, D]`` (Hq a multiple of
    Hkv) split by ``bounds`` (cumulative, 0 … T) into segments, with ``kernel`` (flash, flex or
    nested); ``branches`` as in :mod:`.attention`; ``window``: the model's sliding window (keys
    fewer than ``window`` positions back are visible) or None. Returns ``[1, T, Hq, D]``
    (transformers' attention output layout)."""
    if bounds[0] != 0 or bounds[-1] != query.shape[2]:
        raise KernelError(
            f"packed attention needs segments covering all {query.shape[2]} tokens, got {bounds}"
        )
    dtype = _common_dtype(query)
    query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    layout = _layout(bounds, branches, query.device)
    if kernel == "flash":
        out = _flash(query, key, value, layout, scale, softcap, window, dropout)
    elif kernel == "flex":
        out = _flex(query, key, value, layout, scale, softcap, window, dropout)
    elif kernel == "nested":
        out = _nested(query, key, value, layout, scale, softcap, window, dropout, bool(branches))
    else:
        raise KernelError(f"no packed kernel {kernel!r} (flash, flex or nested)")
    note_ran(kernel, query)
    return out


def note_ran(kernel: str, query) -> None:
    """Record that ``kernel`` attended a packed batch on ``query``'s device (:func:`kernels_ran`)."""
    ran = f"{kernel}@{query.device.type}"
    if ran not in _ran:
        _ran.add(ran)
        log.debug("packed attention: %s kernel ran on %s (%s)", kernel, query.device.type, query.dtype)


def _common_dtype(query) -> torch.dtype:
    """The one dtype q, k and v are attended in: autocast's when it is on (rotary embeddings
    leave q/k in fp32 while v comes out of a bf16 linear), else the query's."""
    return autocast_dtype(query) or query.dtype


# ------------------------------------------------------------------------------------------------
# FlexAttention
# ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    """FlexAttention compiled once for every batch length: packed batches differ in length from
    step to step, and a kernel specialised per length would recompile (seconds each) at every
    new length until dynamo's cache limit, then drop to the eager T x T path."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=True)


@functools.lru_cache(maxsize=8)
def _softcap_mod(cap: float):
    """Gemma-2 logit soft-capping ``cap * tanh(score / cap)`` as a score_mod (one function
    object per cap value, so the compiled kernel is reused)."""

    def score_mod(score, b, h, q_idx, kv_idx):
        return torch.tanh(score / cap) * cap

    return score_mod


def mask_mod_for(layout: Layout, window: int | None):
    """The FlexAttention mask of ``layout``: key ``k`` is visible to query ``q`` when both are in
    the same segment, ``k`` is in ``q``'s branch or the shared prompt, not later, and (with a
    window) fewer than ``window`` positions back."""
    doc, vpos, branch = layout.doc, layout.vpos, layout.branch

    def mask_mod(b, h, q_idx, kv_idx):
        visible = (doc[q_idx] == doc[kv_idx]) & (vpos[kv_idx] <= vpos[q_idx])
        visible = visible & ((branch[kv_idx] == branch[q_idx]) | (branch[kv_idx] == 0))
        if window is not None:
            visible = visible & (vpos[q_idx] - vpos[kv_idx] < window)
        return visible

    return mask_mod


def _block_mask(layout: Layout, window: int | None, n: int):
    """The layout's block mask (built once per layout and window, so once per step)."""
    from torch.nn.attention.flex_attention import create_block_mask

    if window not in layout.masks:
        mask_mod = mask_mod_for(layout, window)
        layout.masks[window] = create_block_mask(mask_mod, 1, None, n, n, device=layout.doc.device)
    return layout.masks[window]


def _flex(query, key, value, layout, scale, softcap, window, dropout):
    if dropout:
        raise KernelError("FlexAttention has no attention dropout; use attention_kernel loop (or auto)")
    cpu = query.device.type == "cpu"
    if cpu and torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad):
        raise KernelError(
            f"FlexAttention has no CPU backward in torch {torch.__version__}; "
            "train on CPU with attention_kernel loop (or auto)"
        )
    from torch.nn.attention.flex_attention import flex_attention

    # Compiled on CUDA (eager FlexAttention materialises the T x T scores). Eager on CPU: it
    # serves forward-only checks there, and inductor's CPU FlexAttention in torch 2.13 returns
    # wrong rows when T is not a multiple of 128 and fails to compile document masks.
    fn = flex_attention if cpu else _compiled_flex()
    out = fn(
        query,
        key,
        value,
        score_mod=_softcap_mod(float(softcap)) if softcap is not None else None,
        block_mask=_block_mask(layout, window, query.shape[2]),
        scale=scale,
        enable_gqa=query.shape[1] != key.shape[1],
    )
    return out.transpose(1, 2).contiguous()


# ------------------------------------------------------------------------------------------------
# FlashAttention varlen and nested-tensor SDPA
# ------------------------------------------------------------------------------------------------


def _flash(query, key, value, layout, scale, softcap, window, dropout):
    if query.device.type != "cuda" or query.dtype not in (torch.bfloat16, torch.float16):
        raise KernelError(
            f"flash_attn_varlen_func needs CUDA bf16/fp16 inputs, got {query.device.type} {query.dtype}"
        )
    from flash_attn import flash_attn_varlen_func

    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # [T, H, D]
    if layout.k_index is not None:
        k, v = k.index_select(0, layout.k_index), v.index_select(0, layout.k_index)
    q_bounds, k_bounds = layout.q_bounds, layout.k_bounds
    extra = {"softcap": float(softcap)} if softcap is not None else {}
    out = flash_attn_varlen_func(
        q,
        k,
        v,
        torch.tensor(q_bounds, dtype=torch.int32, device=q.device),
        torch.tensor(k_bounds, dtype=torch.int32, device=q.device),
        max(b - a for a, b in zip(q_bounds, q_bounds[1:])),
        max(b - a for a, b in zip(k_bounds, k_bounds[1:])),
        dropout_p=dropout,
        softmax_scale=scale,
        causal=True,  # bottom-right aligned: B's queries end where its keys end
        window_size=(window - 1, 0) if window is not None else (-1, -1),
        **extra,
    )
    return out[None]


def _nested(query, key, value, layout, scale, softcap, window, dropout, branched):
    if query.device.type != "cuda":
        raise KernelError(
            "nested-tensor SDPA has no causal kernel on CPU; use attention_kernel loop (or auto)"
        )
    if branched or softcap is not None or window is not None:
        raise KernelError(
            "the nested kernel serves plain causal segments only (no branches, soft-cap or window)"
        )
    import torch.nn.functional as F

    groups = query.shape[1] // key.shape[1]
    offsets = torch.tensor(layout.q_bounds, dtype=torch.int64, device=query.device)

    def jagged(x, repeat=1):  # [1, H, T, D] -> [segments, H, j, D]
        flat = x[0].transpose(0, 1)
        if repeat > 1:
            flat = flat.repeat_interleave(repeat, dim=1)
        return torch.nested.nested_tensor_from_jagged(flat.contiguous(), offsets).transpose(1, 2)

    out = F.scaled_dot_product_attention(
        jagged(query),
        jagged(key, groups),
        jagged(value, groups),
        dropout_p=dropout,
        is_causal=True,
        scale=scale,
    )
    return out.transpose(1, 2).values()[None]
