"""generate_completions: the one pad-then-generate helper (eval, GRPO rollouts, on-policy distillation)."""

from __future__ import annotations

import pytest
import torch

from tunesmith.models.adapters import unwrap
from tunesmith.models.attention import register
from tunesmith.models.generate import Sampling, generate_completions
from tunesmith.models.load import load_causal_lm
from tunesmith.models.template import stop_token_ids


@pytest.fixture()
def model(tiny_model_dir):
    """The tiny Llama as training sets it up: varlen attention, training mode."""
    m = load_causal_lm(str(tiny_model_dir))
    m.set_attn_implementation(register())
    m.train()
    return m


@pytest.fixture()
def prompts(tiny_tokenizer):
    texts = ("hi", "the kettle water is warm and the tea is hot", "one two three")
    return [tiny_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def _run(model, prompts, tokenizer, sampling=Sampling(), **kw):
    kw.setdefault("seed", 0)
    kw.setdefault("stop_ids", stop_token_ids(tokenizer))
    return generate_completions(
        model, prompts, sampling, max_new_tokens=6, pad_id=tokenizer.pad_token_id, **kw
    )


def test_greedy_batch_equals_one_prompt_at_a_time_and_restores_the_model(model, prompts, tiny_tokenizer):
    assert len({len(p) for p in prompts}) == 3  # mixed lengths: the batch is left-padded
    together = _run(model, prompts, tiny_tokenizer)
    alone = [_run(model, [p], tiny_tokenizer)[0] for p in prompts]
    assert together == alone
    assert _run(model, prompts, tiny_tokenizer, batch_size=2) == together
    assert all(1 <= len(c) <= 6 for c in together)
    assert model.training and unwrap(model).config._attn_implementation == "tunesmith_varlen"


def test_completion_ends_with_and_includes_the_first_stop_token(model, prompts, tiny_tokenizer):
    free = _run(model, prompts[:1], tiny_tokenizer, stop_ids=[-1])[0]  # no real stop token
    assert len(free) == 6
    stop = free[2]
    cut = _run(model, prompts[:1], tiny_tokenizer, stop_ids=[stop])[0]
    assert cut == free[: free.index(stop) + 1]


def test_seeded_sampling_is_reproducible_and_leaves_the_global_rng_alone(model, prompts, tiny_tokenizer):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = _run(model, prompts, tiny_tokenizer, seed=5, sampling=Sampling(1.0, top_k=0))
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(999)  # the global state does not matter with a seed
    assert _run(model, prompts, tiny_tokenizer, seed=5, sampling=Sampling(1.0, top_k=0)) == a


def test_unseeded_sampling_draws_from_the_global_rng(model, prompts, tiny_tokenizer):
    torch.manual_seed(7)
    before = torch.get_rng_state()
    a = _run(model, prompts * 4, tiny_tokenizer, seed=None, sampling=Sampling(1.0, top_k=0))
    assert not torch.equal(torch.get_rng_state(), before)  # a resumed run restores this state
    torch.set_rng_state(before)
    assert _run(model, prompts * 4, tiny_tokenizer, seed=None, sampling=Sampling(1.0, top_k=0)) == a
    b = _run(model, prompts * 4, tiny_tokenizer, seed=None, sampling=Sampling(1.0, top_k=0))
    assert b != a  # the stream moved on: 12 rows of 6 tokens over ~320 tokens cannot repeat
