"""Packed, padding-free loss == per-example loss from the model's own padded forward."""

from __future__ import annotations

import factory
import pytest
import torch

from tunesmith.data.collate import collate
from tunesmith.data.render import Rendered
from tunesmith.models.attention import register
from tunesmith.models.forward import token_loss


def _examples(vocab: int, lengths: list[int], seed: int = 0) -> list[Rendered]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(1, vocab, (n,), generator=g).tolist()
        mask = (torch.rand(n, generator=g) < 0.6).long().tolist()
        out.append(Rendered(ids, mask, "x"))
    return out


def _reference_loss_sum(model, examples: list[Rendered]) -> float:
    """Sum of token CE computed by the unmodified HF forward, one example at a time."""
    total = 0.0
    for ex in examples:
        ids = torch.tensor([ex.input_ids])
        logits = model(input_ids=ids).logits[0, :-1].float()
        target = torch.tensor(ex.input_ids[1:])
        keep = torch.tensor(ex.loss_mask[1:]).bool()
        total += torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum").item()
    return total


@pytest.mark.parametrize("arch", factory.ARCHS)
def test_packed_equals_unpacked(arch, tmp_path):
    """Lengths exceed Gemma's 16-token sliding window so the windowed path is exercised too."""
    model = factory.build_model(tmp_path, arch, vocab_size=97)
    model.eval()
    examples = _examples(97, [23, 5, 40, 2, 31])
    with torch.no_grad():
        reference = _reference_loss_sum(model, examples)
        model.set_attn_implementation(register())
        loss, metrics = token_loss(model, collate(examples), chunk_size=7)
    assert metrics["n"] == sum(r.n_targets for r in examples)
    assert abs(loss.item() - reference) <= 1e-5 * abs(reference)
