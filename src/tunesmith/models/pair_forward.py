"""Forward passes over shared-prompt preference rows (see :mod:`tunesmith.data.pair_collate`)."""

from __future__ import annotations

import torch
from torch import nn

from ..data.pair_collate import PairBatch
from ..losses.logprobs import linear_token_logprobs, sequence_sums
from .forward import decoder_hidden_states, output_head, profile_scope


def pair_hidden(model: nn.Module, batch: PairBatch) -> torch.Tensor:
    """Final-norm hidden states ``[T, H]``; each answer attends to its prompt and itself only.

    Needs the model's attention set to tunesmith's varlen function (``attn_implementation:
    auto``), which reads ``tunesmith_branches``.
    """
    return decoder_hidden_states(model, batch, tunesmith_branches=batch.branches)[0]


def token_logprobs(
    model: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """``log p(target)`` ``[N]`` (fp32) under the LM head for ``hidden [N, H]``."""
    head, transform = output_head(model)
    if type(head) is nn.Linear:
        return linear_token_logprobs(
            hidden, head.weight, targets, bias=head.bias, chunk_size=chunk_size, transform=transform
        )
    # A wrapped head (adapter on lm_head, modules_to_save): call the module, still chunked.
    out = []
    for s in range(0, hidden.shape[0], chunk_size):
        z = transform(head(hidden[s : s + chunk_size]))
        out.append(torch.log_softmax(z, -1).gather(1, targets[s : s + chunk_size, None]).squeeze(1))
    return torch.cat(out) if out else hidden.new_zeros(0, dtype=torch.float32)


def sequence_logps(model: nn.Module, batch: PairBatch, chunk_size: int = 1024) -> torch.Tensor:
    """Summed log-probabilities ``[2n]`` of every answer (``2i`` first, ``2i+1`` second)."""
    hidden = pair_hidden(model, batch)
    with profile_scope("lm_head_loss"):
        selected = hidden.index_select(0, batch.target_positions)
        per_token = token_logprobs(model, selected, batch.target_ids, chunk_size)
        return sequence_sums(per_token, batch.target_seq, 2 * batch.n_items)


@torch.no_grad()
def reference_logps(
    model: nn.Module, batch: PairBatch, chunk_size: int = 1024, reference: nn.Module | None = None
) -> torch.Tensor:
    """The reference model's ``[2n]`` answer log-probs.

    ``reference`` (a frozen copy) when given; otherwise ``model`` itself with its PEFT
    adapters disabled — the base weights, no second copy in memory.
    """
    if reference is not None:
        return sequence_logps(reference, batch, chunk_size)
    peft_model = getattr(model, "module", model)  # a DistributedDataParallel wrapper holds it
    disable = getattr(peft_model, "disable_adapter", None)
    if disable is None:
        raise RuntimeError(
            "no reference: the model has no adapter to disable and no reference "
            "copy or precomputed log-probs were given"
        )
    with disable():
        return sequence_logps(model, batch, chunk_size)
