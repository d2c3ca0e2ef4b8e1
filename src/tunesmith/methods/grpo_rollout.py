"""GRPO rollouts: sample groups of completions with the KV cache, and score their log-probs.

Sampling (:func:`sample_groups`) runs the policy — the PEFT-wrapped model being trained — in
eval mode under ``no_grad`` through ``transformers``' ``generate`` with the KV cache.
:func:`generation_mode` makes that safe for a model set up for training:

- tunesmith's training attention (``tunesmith_varlen``) has no mask builder registered with
  transformers, so a left-padded batch would reach it with no padding mask at all and attend
  to pad tokens. For the rollout the model is switched to SDPA (eager for soft-capped
  families such as Gemma 2), and back afterwards;
- the model's ``generation_config`` (which may carry ``top_k``, repetition penalties …) is
  replaced by an empty one, so the sampling distribution is exactly ``softmax(logits / T)``
  (optionally nucleus-truncated by ``top_p``), the distribution whose log-probs the loss uses.

Log-probs (:func:`completion_logprobs`) are computed padding-free: every prompt + completion
becomes one example of a flat ``[1, T]`` batch (varlen attention, as in SFT), and the LM head
runs only at completion positions, in chunks whose ``[chunk, V]`` logits are recomputed in the
backward pass instead of being kept (activation checkpointing of the head).
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils.checkpoint import checkpoint

from ..data.collate import collate
from ..data.render import Rendered
from ..models.adapters import unwrap
from ..models.attention import padded_attention
from ..models.forward import decoder_hidden_states, head_logits


@contextlib.contextmanager
def generation_mode(model):
    """Eval mode, padding-aware attention and a neutral generation config; all restored after."""
    from transformers import GenerationConfig

    hf = unwrap(model)
    was_training = model.training
    previous_gen = getattr(hf, "generation_config", None)
    model.eval()
    try:
        with padded_attention(model):
            hf.generation_config = GenerationConfig()
            yield
    finally:
        if previous_gen is not None:
            hf.generation_config = previous_gen
        model.train(was_training)


@torch.no_grad()
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
    device = next(model.parameters()).device
    rows = [p for p in prompts for _ in range(group_size)]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):  # left padding: generation continues from the last column
        input_ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        attention[i, width - len(r) :] = 1
    with generation_mode(model):
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=0,
            max_new_tokens=max_new_tokens,
            eos_token_id=list(stop_ids),
            pad_token_id=pad_id,
            use_cache=True,
        )
    stops = set(stop_ids)
    completions = []
    for row in out[:, width:].tolist():
        cut = next((k + 1 for k, t in enumerate(row) if t in stops), len(row))
        completions.append(row[:cut])
    return completions


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
