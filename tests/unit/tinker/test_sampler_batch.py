"""tunesmith.tinker.sampler.sample_batch: several requests (prompts of different lengths, left-
padded) decoded as one batch give what each request alone gives."""

from __future__ import annotations

import factory
import pytest
import torch

from tunesmith.tinker.sampler import SampleSpec, batch_key, sample, sample_batch

PROMPTS = [[5, 17, 3, 42, 8, 99], [7, 7], [250, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]]


@pytest.fixture(scope="module", params=["llama", "gemma2"])
def model(request):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(factory.model_config(request.param, 320)).eval()


def _teacher_forced(model, prompt, completion, temperature=1.0):
    with torch.no_grad():
        z = model(input_ids=torch.tensor([prompt + completion])).logits[0].float()[len(prompt) - 1 : -1]
    return torch.log_softmax(z / temperature, -1).gather(1, torch.tensor(completion)[:, None])[:, 0]


def test_greedy_batch_equals_each_request_alone(model):
    spec = SampleSpec(num_samples=2, max_tokens=7, temperature=0.0)
    batched = sample_batch(model, [(p, spec) for p in PROMPTS])
    for prompt, got in zip(PROMPTS, batched):
        alone = sample(model, prompt, spec)
        assert len(got.sequences) == 2
        for a, b in zip(got.sequences, alone.sequences):
            assert a.tokens == b.tokens and a.stop_reason == b.stop_reason
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=0)


def test_sampled_logprobs_are_the_models_and_stops_apply_per_row(model):
    torch.manual_seed(1)
    probe = (
        sample_batch(model, [(PROMPTS[0], SampleSpec(max_tokens=1, temperature=0.0))])[0]
        .sequences[0]
        .tokens[0]
    )
    spec = SampleSpec(num_samples=3, max_tokens=6, temperature=1.3, stop_token_ids=(probe,))
    reqs = [(p, spec) for p in PROMPTS]
    torch.manual_seed(2)
    batched = sample_batch(model, reqs)
    assert [len(r.sequences) for r in batched] == [3, 3, 3]
    for prompt, result in zip(PROMPTS, batched):
        for seq in result.sequences:
            assert 1 <= len(seq.tokens) <= 6
            assert (seq.stop_reason == "stop") == (seq.tokens[-1] == probe)
            assert probe not in seq.tokens[:-1]
            ref = _teacher_forced(model, prompt, seq.tokens, temperature=1.3)
            torch.testing.assert_close(torch.tensor(seq.logprobs), ref, atol=1e-4, rtol=0)


def test_batch_keys():
    plain = SampleSpec(num_samples=4, max_tokens=8)
    assert batch_key(plain) == batch_key(SampleSpec(num_samples=1, max_tokens=8))
    assert batch_key(plain) != batch_key(SampleSpec(max_tokens=9))
    for alone in (
        SampleSpec(max_tokens=8, seed=0),
        SampleSpec(max_tokens=8, prompt_logprobs=True),
        SampleSpec(max_tokens=8, topk_sample_logprobs=2),
    ):
        assert batch_key(alone) is None
    with pytest.raises(ValueError):
        sample_batch(None, [(PROMPTS[0], plain), (PROMPTS[1], SampleSpec(max_tokens=9))])
