"""A shared-prompt pair row gives each answer exactly the hidden states of prompt + answer alone
(the second answer never sees the first), for every model family; SFT rows are unchanged."""

from __future__ import annotations

import factory
import pytest
import torch

from tunesmith.data.pair_collate import collate_pairs
from tunesmith.data.preference import PairItem
from tunesmith.models.attention import register
from tunesmith.models.pair_forward import pair_hidden, sequence_logps


def _model(arch, window=None):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = factory.model_config(arch, 64)
    if window:
        config.sliding_window = window
    m = AutoModelForCausalLM.from_config(config).eval()
    m.set_attn_implementation(register())
    return m


def _alone(model, ids):
    """Hidden states and log-softmax of one sequence on its own (transformers' eager attention)."""
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    model.set_attn_implementation(register())
    return out.hidden_states[-1][0], torch.log_softmax(out.logits[0].float(), -1)


@pytest.mark.parametrize("arch", factory.ARCHS)
def test_pair_row_equals_separate_sequences(arch):
    # sliding window 4 < lengths, so Mistral/Gemma windows are exercised in the second branch
    model = _model(arch, window=4 if arch in ("mistral", "gemma2", "gemma3") else None)
    g = torch.Generator().manual_seed(1)
    items = [
        PairItem(*(torch.randint(1, 64, (n,), generator=g).tolist() for n in sizes), source=f"x:{k}")
        for k, sizes in enumerate([(5, 3, 6), (2, 7, 1), (9, 4, 4)])
    ]
    batch = collate_pairs(items)
    with torch.no_grad():
        hidden = pair_hidden(model, batch)
        logps = sequence_logps(model, batch)
    offset = 0
    for i, it in enumerate(items):
        p, a, b = len(it.prompt_ids), len(it.first_ids), len(it.second_ids)
        for k, (answer, at) in enumerate(((it.first_ids, offset), (it.second_ids, offset + a))):
            h_alone, lp_alone = _alone(model, it.prompt_ids + answer)
            got = torch.cat([hidden[offset : offset + p], hidden[at + p : at + p + len(answer)]])
            assert torch.allclose(got, h_alone, atol=2e-5), (arch, i, k)
            # answer log-prob: token j of the answer predicted at position p - 1 + j
            want = sum(float(lp_alone[p - 1 + j, t]) for j, t in enumerate(answer))
            assert float(logps[2 * i + k]) == pytest.approx(want, abs=1e-4)
        offset += p + a + b


def test_second_answer_does_not_see_the_first():
    model = _model("llama")
    base = PairItem([3, 4, 5], [6, 7, 8], [9, 10], "x:1")
    changed = PairItem([3, 4, 5], [11, 12, 13], [9, 10], "x:1")
    with torch.no_grad():
        h1, h2 = pair_hidden(model, collate_pairs([base])), pair_hidden(model, collate_pairs([changed]))
    assert torch.equal(h1[6:], h2[6:])  # the second answer's states ignore the first answer
    assert not torch.allclose(h1[3:6], h2[3:6])


def test_collate_layout():
    b = collate_pairs([PairItem([1, 2], [3, 4, 5], [6], "x:1", margin=0.5)])
    assert b.input_ids.tolist() == [[1, 2, 3, 4, 5, 6]]
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 4, 2]]
    assert b.branches == ((2, 3),)
    # chosen 3,4,5 predicted at 1,2,3; rejected 6 predicted at 1 (the last prompt token)
    assert b.target_positions.tolist() == [1, 2, 3, 1]
    assert b.target_ids.tolist() == [3, 4, 5, 6] and b.target_seq.tolist() == [0, 0, 0, 1]
    assert b.last_positions.tolist() == [4, 5] and b.answer_tokens.tolist() == [3.0, 1.0]
    assert b.margins.tolist() == [0.5] and b.ref_logps is None
