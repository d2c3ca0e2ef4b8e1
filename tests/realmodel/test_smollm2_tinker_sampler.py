"""tunesmith.tinker.sampler on the real SmolLM2-135M-Instruct: greedy equals transformers'
``generate`` (tunesmith's ``generate_completions``) on a chat prompt, stopping at the template's
end-of-turn token; sampled log-probs equal a teacher-forced forward pass; a stop string cuts a
real tokenizer's output where a whole-text decode first shows it."""

from __future__ import annotations

import pytest
import torch

from tunesmith.models.generate import Sampling, generate_completions, prompt_token_ids
from tunesmith.models.template import stop_token_ids
from tunesmith.tinker.sampler import SampleSpec, resolve_stop, sample


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    from tunesmith.models.load import load_causal_lm

    return load_causal_lm(str(smollm2_dir)).eval()


@pytest.fixture(scope="module")
def prompt(smollm2_tokenizer):
    return prompt_token_ids(smollm2_tokenizer, "Name three colors of the rainbow.")


def test_greedy_equals_transformers_generate(smollm2, smollm2_tokenizer, prompt):
    stops = stop_token_ids(smollm2_tokenizer)
    ids, _ = resolve_stop(None, stops)
    got = sample(smollm2, prompt, SampleSpec(max_tokens=24, temperature=0.0, stop_token_ids=ids)).sequences[0]
    (want,) = generate_completions(
        smollm2, [prompt], Sampling(0.0), max_new_tokens=24, stop_ids=stops, pad_id=stops[0], seed=0
    )
    assert got.tokens == want
    assert got.stop_reason == ("stop" if want[-1] in stops else "length")


def test_sampled_logprobs_and_stop_strings_on_the_real_tokenizer(smollm2, smollm2_tokenizer, prompt):
    spec = SampleSpec(num_samples=3, max_tokens=16, temperature=0.8, top_p=0.95, seed=1)
    res = sample(smollm2, prompt, spec)
    with torch.no_grad():
        for seq in res.sequences:
            z = smollm2(input_ids=torch.tensor([prompt + seq.tokens])).logits[0, len(prompt) - 1 : -1].float()
            ref = torch.log_softmax(z / 0.8, -1).gather(1, torch.tensor(seq.tokens)[:, None])[:, 0]
            torch.testing.assert_close(torch.tensor(seq.logprobs), ref, atol=1e-4, rtol=0)
    # One sample, so that no other row's stopping changes how much of the seeded stream it sees.
    one = SampleSpec(max_tokens=16, temperature=0.8, top_p=0.95, seed=1)
    tokens = sample(smollm2, prompt, one).sequences[0].tokens
    text = smollm2_tokenizer.decode(tokens)
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = next(j for j in range(1, len(tokens) + 1) if stop in smollm2_tokenizer.decode(tokens[:j]))
    again = sample(
        smollm2, prompt, SampleSpec(**{**one.__dict__, "stop_strings": (stop,)}), tokenizer=smollm2_tokenizer
    )
    assert again.sequences[0].tokens == tokens[:cut] and again.sequences[0].stop_reason == "stop"
