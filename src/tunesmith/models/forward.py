"""The training forward: decoder on a padding-free batch, LM head only at supervised positions."""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.autograd.profiler import record_function

from ..data.collate import Batch
from ..losses import linear_cross_entropy
from ..losses.head import LogitTransform
from .adapters import unwrap

# Profiler scopes that ``tunesmith train --profile`` (engine/profile.py) attributes time to.
PROFILE_PREFIX = "tunesmith:"


def profile_scope(category: str):
    """A named profiler scope while a profiler runs; otherwise a no-op (a ``record_function``
    would still cost a few µs per call, and the fused LoRA layer opens several per layer)."""
    if not torch.autograd._profiler_enabled():
        return contextlib.nullcontext()
    return record_function(PROFILE_PREFIX + category)


def output_head(model: nn.Module) -> tuple[nn.Module, LogitTransform]:
    """(the LM-head module, the family's logit transform: scale / soft-cap of Cohere, Granite,
    Gemma 2/3). The fused kernels take the module's weight when it is a plain ``nn.Linear``."""
    hf = unwrap(model)
    return hf.get_output_embeddings(), LogitTransform.of(hf.config)


def head_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Float32 logits ``[N, V]`` of ``hidden [N, H]``, as training and generation see them."""
    head, transform = output_head(model)
    return transform(head(hidden))


def decoder_hidden_states(model: nn.Module, batch, **attention) -> torch.Tensor:
    """Final-norm hidden states ``[1, T, H]`` of a flat varlen batch (a ``Batch`` or a
    ``PairBatch``: anything with ``input_ids``, ``position_ids``, ``cu_seqlens``, ``max_seqlen``),
    attention per example; ``attention`` goes to tunesmith's varlen attention function (e.g.
    ``tunesmith_branches`` for shared-prompt pairs)."""
    decoder = unwrap(model).get_decoder()
    out = decoder(
        input_ids=batch.input_ids,
        position_ids=batch.position_ids,
        cu_seq_lens_q=batch.cu_seqlens,
        cu_seq_lens_k=batch.cu_seqlens,
        max_length_q=batch.max_seqlen,
        max_length_k=batch.max_seqlen,
        use_cache=False,
        **attention,
    )
    return out.last_hidden_state


def head_loss(model: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk_size: int):
    """Summed CE of the LM head over ``hidden [N, H]`` against ``targets [N]`` -> (loss, metrics)."""
    head, transform = output_head(model)
    if type(head) is nn.Linear:
        return linear_cross_entropy(
            hidden, head.weight, targets, bias=head.bias, chunk_size=chunk_size, transform=transform
        )
    # A wrapped head (adapter on lm_head, modules_to_save): call the module, still chunked.
    loss = hidden.new_zeros((), dtype=torch.float32)
    correct = torch.zeros((), dtype=torch.long, device=hidden.device)
    for s in range(0, hidden.shape[0], chunk_size):
        z = transform(head(hidden[s : s + chunk_size]))
        y = targets[s : s + chunk_size]
        loss = loss + nn.functional.cross_entropy(z, y, reduction="sum")
        correct += (z.detach().argmax(-1) == y).sum()
    return loss, {"correct": correct, "n": int(targets.shape[0])}


def token_loss(model: nn.Module, batch: Batch, chunk_size: int = 1024):
    """(summed loss over the batch's target tokens, metrics) for SFT / pretraining."""
    hidden = decoder_hidden_states(model, batch)[0]
    with profile_scope("lm_head_loss"):
        selected = hidden.index_select(0, batch.target_positions)
        return head_loss(model, selected, batch.target_ids, chunk_size)
