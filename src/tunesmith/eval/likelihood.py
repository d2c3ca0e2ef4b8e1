"""Per-example likelihood of the supervised tokens: loss sum, token count, correct next tokens.

Reuses the training path: examples are rendered by :class:`tunesmith.data.render.Renderer` (so
the supervised tokens are exactly the ones training scores), concatenated into padding-free
batches (:func:`tunesmith.data.collate.collate`), run through the decoder once per pass
(:func:`tunesmith.models.forward.decoder_hidden_states`) and scored by the LM head only at the
supervised positions (:func:`tunesmith.models.forward.head_loss`), example by example, so every
example gets its own numbers for the paired comparison.
"""

from __future__ import annotations

import torch

from ..data.collate import collate
from ..data.render import Rendered
from ..engine.loop import split_by_tokens
from ..models.adapters import unwrap
from ..models.attention import NAME as VARLEN
from ..models.forward import decoder_hidden_states, head_loss


def uses_varlen_attention(model) -> bool:
    """True when the model attends example by example inside a flat packed batch."""
    config = unwrap(model).config
    return getattr(config, "_attn_implementation", None) == VARLEN


@torch.no_grad()
def example_losses(
    model,
    rendered: list[Rendered],
    *,
    max_tokens_per_pass: int = 4096,
    chunk_size: int = 1024,
    progress=None,
) -> list[dict | None]:
    """``{"loss_sum", "n_tokens", "correct"}`` per rendered example (None when it has no
    supervised token).

    ``loss_sum`` is the summed cross-entropy (nats) of the example's supervised tokens,
    ``n_tokens`` their count, ``correct`` how many of them are the argmax prediction. Examples
    are batched ``max_tokens_per_pass`` tokens at a time when the model uses tunesmith's varlen
    attention, one at a time otherwise (a plain SDPA model would attend across examples).
    ``progress(n)``, when given, is called after each forward pass with the examples it scored.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[dict | None] = [None] * len(rendered)
    todo = [i for i, r in enumerate(rendered) if r.n_targets > 0]
    limit = max_tokens_per_pass if uses_varlen_attention(model) else 1
    groups = split_by_tokens(todo, limit, lambda i: len(rendered[i].input_ids))
    for group in groups:
        batch = collate([rendered[i] for i in group]).to(device)
        hidden = decoder_hidden_states(model, batch)[0]
        selected = hidden.index_select(0, batch.target_positions)
        start = 0
        for i in group:
            n = rendered[i].n_targets
            loss, metrics = head_loss(
                model, selected[start : start + n], batch.target_ids[start : start + n], chunk_size
            )
            out[i] = {"loss_sum": float(loss), "n_tokens": n, "correct": int(metrics["correct"])}
            start += n
        if progress is not None:
            progress(len(group))
    if was_training:
        model.train()
    return out
