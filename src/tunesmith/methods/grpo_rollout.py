"""GRPO rollouts: sample groups of completions with the KV cache, and score their log-probs.

Sampling (:func:`sample_groups`) runs the policy — the PEFT-wrapped model being trained — in
eval mode under ``no_grad`` through :func:`tunesmith.models.generate.generate_completions`, with
a padding-aware attention (tunesmith's training attention builds no padding mask) and the
model's ``generation_config`` replaced by an empty one, so the sampling distribution is exactly
``softmax(logits / T)`` (optionally nucleus-truncated by ``top_p``), the distribution whose
log-probs the loss uses.

Log-probs (:func:`completion_logprobs`) are computed padding-free: every prompt + completion
becomes one example of a flat ``[1, T]`` batch (varlen attention, as in SFT), and the LM head
runs only at completion positions, in chunks whose ``[chunk, V]`` logits are recomputed in the
backward pass instead of being kept (activation checkpointing of the head).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from ..data.collate import collate
from ..data.render import Rendered
from ..models.forward import decoder_hidden_states, head_logits
from ..models.generate import Sampling, generate_completions


def sample_groups(
    model,
    prompts: list[list[int]],
    *,
    group_size: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    stop_ids: list[int],
    pad_id: int,
) -> list[list[int]]:
    """``group_size`` sampled completions per prompt, as token lists, prompt-major order.

    Row ``p * group_size + j`` is sample ``j`` of prompt ``p``. A completion ends with (and
    includes) the first stop token, or has ``max_new_tokens`` tokens when none came. Sampling
    draws from the global torch RNG (checkpointed by the engine, so a resumed run draws the
    same samples).
    """
    return generate_completions(
        model,
        [p for p in prompts for _ in range(group_size)],
        Sampling(temperature, top_p, top_k=0),
        max_new_tokens=max_new_tokens,
        stop_ids=stop_ids,
        pad_id=pad_id,
        seed=None,
        neutral_config=True,
    )


def _chunk_logprobs(model, hidden, targets, inv_temperature: float):
    z = head_logits(model, hidden) * inv_temperature
    return z.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(z, dim=-1)


def token_logprobs(
    model, hidden: torch.Tensor, targets: torch.Tensor, *, temperature: float = 1.0, chunk_size: int = 1024
) -> torch.Tensor:
    """``log softmax(head(hidden) / temperature)[targets]`` -> ``[N]`` fp32, for ``hidden [N, H]``.

    Applies the family's logit scale / soft-cap before the temperature, like generation does.
    Under autograd each chunk is checkpointed: its logits are recomputed in backward.
    """
    out = []
    for s in range(0, hidden.shape[0], chunk_size):
        args = (model, hidden[s : s + chunk_size], targets[s : s + chunk_size], 1.0 / temperature)
        if torch.is_grad_enabled() and hidden.requires_grad:
            out.append(checkpoint(_chunk_logprobs, *args, use_reentrant=False))
        else:
            out.append(_chunk_logprobs(*args))
    return torch.cat(out) if out else hidden.new_zeros((0,), dtype=torch.float32)


def completion_logprobs(
    model,
    prompts: list[list[int]],
    completions: list[list[int]],
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of each completion's tokens given its prompt.

    ``prompts[i]`` (non-empty) and ``completions[i]`` (non-empty) are token lists. Returns
    ``(logp [N, L], mask [N, L])`` with ``L`` the longest completion, ``logp`` padded with 0 and
    ``mask`` 1 on real tokens. Gradients flow into ``logp`` when enabled.
    """
    device = next(model.parameters()).device
    items = [
        Rendered(list(p) + list(c), [0] * len(p) + [1] * len(c), "") for p, c in zip(prompts, completions)
    ]
    batch = collate(items).to(device)
    hidden = decoder_hidden_states(model, batch)[0]
    selected = hidden.index_select(0, batch.target_positions)
    flat = token_logprobs(model, selected, batch.target_ids, temperature=temperature, chunk_size=chunk_size)
    lengths = [len(c) for c in completions]
    logp = torch.nn.utils.rnn.pad_sequence(list(flat.split(lengths)), batch_first=True)
    mask = torch.zeros_like(logp)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1.0
    return logp, mask
