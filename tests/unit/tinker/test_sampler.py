"""tunesmith.tinker.sampler on tiny random models: every claim checked against a recomputation
that shares nothing with the sampler's decode loop (full forward passes without a KV cache)."""

from __future__ import annotations

import math

import factory
import pytest
import torch

from tunesmith.errors import DataError
from tunesmith.tinker.sampler import (
    TOPK_EMPTY_ID,
    TOPK_EMPTY_LOGPROB,
    SampleSpec,
    sample,
    sampling_probs,
)

PROMPT = [5, 17, 3, 42, 8, 99]


def _tiny(arch: str = "llama", vocab: int = 320, seed: int = 0, **overrides):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(factory.model_config(arch, vocab, **overrides))
    return model.eval()


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    return _tiny(vocab=len(tiny_tokenizer))


def _logits(model, ids: list[int]) -> torch.Tensor:
    """Float32 logits ``[len(ids), V]`` of one full forward pass, no cache."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


def _greedy_reference(model, prompt, n):
    """Tokens and log-probs of a plain argmax loop that recomputes the whole sequence each step."""
    ids, toks, lps = list(prompt), [], []
    for _ in range(n):
        z = _logits(model, ids)[-1]
        t = int(z.argmax())
        toks.append(t)
        lps.append(float(torch.log_softmax(z, -1)[t]))
        ids.append(t)
    return toks, lps


def _teacher_forced(model, prompt, completion, temperature):
    """``log_softmax(logits / T)`` at each completion token, from one forward of prompt+completion."""
    z = _logits(model, prompt + completion)[len(prompt) - 1 : -1]
    logp = torch.log_softmax(z / temperature, -1)
    return logp.gather(1, torch.tensor(completion)[:, None])[:, 0]


def test_greedy_equals_uncached_argmax_loop(model):
    toks, lps = _greedy_reference(model, PROMPT, 12)
    res = sample(model, PROMPT, SampleSpec(num_samples=2, max_tokens=12, temperature=0.0))
    assert len(res.sequences) == 2
    for seq in res.sequences:
        assert seq.tokens == toks
        assert seq.stop_reason == "length"
        torch.testing.assert_close(torch.tensor(seq.logprobs), torch.tensor(lps), atol=1e-5, rtol=0)
    assert res.prompt_logprobs is None and res.topk_prompt is None and res.sequences[0].topk is None


def test_logprobs_equal_teacher_forced_recomputation(model):
    spec = SampleSpec(num_samples=4, max_tokens=10, temperature=0.7, top_k=50, top_p=0.9, seed=3)
    res = sample(model, PROMPT, spec)
    for seq in res.sequences:
        assert len(seq.tokens) == len(seq.logprobs) == 10
        ref = _teacher_forced(model, PROMPT, seq.tokens, 0.7)
        torch.testing.assert_close(torch.tensor(seq.logprobs), ref, atol=1e-4, rtol=0)


def test_rows_that_stop_early_leave_the_batch_without_disturbing_the_others(model):
    """Half the vocabulary stops a row, so rows finish at different steps and the cache is cut
    down several times; every row must still be exactly what the model gives its own prefix."""
    stops = tuple(range(0, 320, 2))
    spec = SampleSpec(num_samples=8, max_tokens=9, temperature=1.0, seed=11, stop_token_ids=stops)
    res = sample(model, PROMPT, spec)
    lengths = {len(s.tokens) for s in res.sequences}
    assert len(lengths) > 2, lengths  # the rows really did finish at different steps
    for seq in res.sequences:
        body, last = seq.tokens[:-1], seq.tokens[-1]
        assert not any(t in stops for t in body)
        assert seq.stop_reason == ("stop" if last in stops else "length")
        assert seq.stop_reason == "stop" or len(seq.tokens) == 9
        ref = _teacher_forced(model, PROMPT, seq.tokens, 1.0)
        torch.testing.assert_close(torch.tensor(seq.logprobs), ref, atol=1e-4, rtol=0)


def test_seed_determinism_and_the_global_rng(model):
    spec = SampleSpec(num_samples=3, max_tokens=8, temperature=1.0, seed=123)
    before = torch.get_rng_state()
    a = sample(model, PROMPT, spec)
    assert torch.equal(torch.get_rng_state(), before)  # a seeded request leaves the global RNG alone
    b = sample(model, PROMPT, spec)
    assert [s.tokens for s in a.sequences] == [s.tokens for s in b.sequences]
    assert [s.logprobs for s in a.sequences] == [s.logprobs for s in b.sequences]
    c = sample(model, PROMPT, SampleSpec(num_samples=3, max_tokens=8, temperature=1.0, seed=124))
    assert [s.tokens for s in a.sequences] != [s.tokens for s in c.sequences]
    # Unseeded: the global RNG is the source, so seeding it reproduces the draw.
    unseeded = SampleSpec(num_samples=3, max_tokens=8, temperature=1.0)
    torch.manual_seed(7)
    d = sample(model, PROMPT, unseeded)
    torch.manual_seed(7)
    e = sample(model, PROMPT, unseeded)
    assert [s.tokens for s in d.sequences] == [s.tokens for s in e.sequences]
    assert not torch.equal(torch.get_rng_state(), before)


def test_samples_are_independent_draws(model):
    res = sample(model, PROMPT, SampleSpec(num_samples=5, max_tokens=6, temperature=1.0, seed=5))
    rows = [tuple(s.tokens) for s in res.sequences]
    assert len(set(rows)) == 5  # 320 near-uniform choices per step: a collision would be a bug
    assert len({r[0] for r in rows}) > 1  # even the first token (drawn from the shared prefill)


def test_stop_token_is_included_and_max_tokens_gives_length(model):
    toks, _ = _greedy_reference(model, PROMPT, 8)
    cut = next(i for i in range(2, 8) if toks[i] not in toks[:i])
    res = sample(model, PROMPT, SampleSpec(max_tokens=8, temperature=0.0, stop_token_ids=(toks[cut],)))
    assert res.sequences[0].tokens == toks[: cut + 1]
    assert res.sequences[0].stop_reason == "stop"
    res = sample(model, PROMPT, SampleSpec(max_tokens=3, temperature=0.0))
    assert res.sequences[0].tokens == toks[:3] and res.sequences[0].stop_reason == "length"
    # A stop token sampled as the very last allowed token still says "stop".
    res = sample(model, PROMPT, SampleSpec(max_tokens=cut + 1, temperature=0.0, stop_token_ids=(toks[cut],)))
    assert res.sequences[0].stop_reason == "stop"


def test_stop_strings_keep_the_token_that_completes_them(model, tiny_tokenizer):
    toks, _ = _greedy_reference(model, PROMPT, 10)
    texts = [tiny_tokenizer.decode(toks[:j]) for j in range(11)]
    # A stop string that first appears once token j is in: the last 2 characters of text j,
    # for the first j where those characters are new.
    j, stop = next(
        (j, texts[j][-2:])
        for j in range(3, 11)
        if len(texts[j]) >= 2 and texts[j][-2:].strip() and texts[j][-2:] not in texts[j - 1]
    )
    spec = SampleSpec(max_tokens=10, temperature=0.0, stop_strings=("never-there", stop))
    res = sample(model, PROMPT, spec, tokenizer=tiny_tokenizer)
    assert res.sequences[0].tokens == toks[:j]
    assert res.sequences[0].stop_reason == "stop"
    assert stop in tiny_tokenizer.decode(res.sequences[0].tokens)
    with pytest.raises(DataError, match="sampling_params.stop: stop strings need the model's tokenizer"):
        sample(model, PROMPT, spec)


def test_top_k_one_and_a_tiny_top_p_are_greedy(model):
    toks, lps = _greedy_reference(model, PROMPT, 6)
    for spec in (
        SampleSpec(num_samples=2, max_tokens=6, temperature=1.0, top_k=1, seed=1),
        SampleSpec(num_samples=2, max_tokens=6, temperature=1.0, top_p=1e-9, seed=1),
    ):
        for seq in sample(model, PROMPT, spec).sequences:
            assert seq.tokens == toks
            # T = 1 and the log-prob is taken before truncation: the greedy log-probs.
            torch.testing.assert_close(torch.tensor(seq.logprobs), torch.tensor(lps), atol=1e-5, rtol=0)


def test_sampling_probs_follow_the_serving_nucleus_rule():
    """The batched truncation here and the serving path's per-sequence one agree row by row."""
    from tunesmith.serve.sampling import nucleus_probs

    torch.manual_seed(0)
    z = torch.randn(4, 50) * 3
    for top_p in (1.0, 0.9, 0.5, 0.05):
        got = sampling_probs(z, 0.8, -1, top_p)
        for row in range(4):
            torch.testing.assert_close(got[row], nucleus_probs(z[row], 0.8, top_p))
    got = sampling_probs(z, 1.0, 5, 1.0)
    assert ((got > 0).sum(-1) == 5).all()
    top5 = z.topk(5, -1).indices
    torch.testing.assert_close(got.gather(1, top5), torch.softmax(z.double().gather(1, top5), -1))


def test_prompt_logprobs_equal_teacher_forced_without_temperature(model):
    spec = SampleSpec(max_tokens=2, temperature=0.5, prompt_logprobs=True, topk_prompt_logprobs=3)
    res = sample(model, PROMPT, spec)
    logp = torch.log_softmax(_logits(model, PROMPT)[:-1], -1)
    ref = logp.gather(1, torch.tensor(PROMPT[1:])[:, None])[:, 0]
    assert len(res.prompt_logprobs) == len(PROMPT) and math.isnan(res.prompt_logprobs[0])
    torch.testing.assert_close(torch.tensor(res.prompt_logprobs[1:]), ref, atol=1e-5, rtol=0)
    ids, lps = res.topk_prompt
    assert len(ids) == len(lps) == len(PROMPT)
    assert ids[0] == [TOPK_EMPTY_ID] * 3 and lps[0] == [TOPK_EMPTY_LOGPROB] * 3
    top = logp.topk(3, -1)
    assert ids[1:] == top.indices.tolist()
    torch.testing.assert_close(torch.tensor(lps[1:]), top.values, atol=1e-5, rtol=0)
    # Only the last N: NaN (and empty top-k rows) before, the same values after.
    last = sample(model, PROMPT, SampleSpec(**{**spec.__dict__, "prompt_logprobs_last_n": 2}))
    assert all(math.isnan(v) for v in last.prompt_logprobs[:-2])
    assert last.prompt_logprobs[-2:] == pytest.approx(res.prompt_logprobs[-2:], abs=1e-6)
    assert last.topk_prompt[0][:-2] == [[TOPK_EMPTY_ID] * 3] * (len(PROMPT) - 2)
    assert last.topk_prompt[0][-2:] == ids[-2:]


def test_compute_logprobs_shapes(model):
    """What the SDK's compute_logprobs sends (max_tokens=1, one sample, prompt log-probs), a
    one-token prompt, and max_tokens=0 (num_samples empty sequences)."""
    res = sample(model, PROMPT, SampleSpec(max_tokens=1, prompt_logprobs=True))
    assert len(res.sequences) == 1 and len(res.sequences[0].tokens) == 1
    assert res.topk_prompt is None
    one = sample(model, [7], SampleSpec(max_tokens=1, prompt_logprobs=True, topk_prompt_logprobs=2))
    assert len(one.prompt_logprobs) == 1 and math.isnan(one.prompt_logprobs[0])
    assert one.topk_prompt == ([[0, 0]], [[TOPK_EMPTY_LOGPROB] * 2])
    empty = sample(model, PROMPT, SampleSpec(num_samples=3, max_tokens=0, prompt_logprobs=True))
    assert [(s.tokens, s.logprobs, s.stop_reason) for s in empty.sequences] == [([], [], "length")] * 3
    assert empty.prompt_logprobs[1:] == pytest.approx(res.prompt_logprobs[1:], abs=1e-6)


def test_topk_sample_logprobs(model):
    spec = SampleSpec(num_samples=2, max_tokens=5, temperature=0.8, seed=2, topk_sample_logprobs=4)
    for seq in sample(model, PROMPT, spec).sequences:
        ids, lps = seq.topk
        assert len(ids) == len(lps) == len(seq.tokens)
        z = _logits(model, PROMPT + seq.tokens)[len(PROMPT) - 1 : -1]
        top = torch.log_softmax(z / 0.8, -1).topk(4, -1)
        assert ids == top.indices.tolist()
        torch.testing.assert_close(torch.tensor(lps), top.values, atol=1e-4, rtol=0)


def test_mode_is_restored(model):
    model.train()
    try:
        sample(model, PROMPT, SampleSpec(max_tokens=2, temperature=0.0))
        assert model.training
    finally:
        model.eval()
    sample(model, PROMPT, SampleSpec(max_tokens=2, temperature=0.0))
    assert not model.training


def test_peft_model_samples_from_the_adapted_weights():
    from peft import LoraConfig, get_peft_model

    base = _tiny(seed=1)
    # init_lora_weights=False: B is random, so the adapter changes the logits.
    cfg = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(base, cfg).eval()
    spec = SampleSpec(num_samples=2, max_tokens=6, temperature=0.9, seed=4)
    res = sample(peft_model, PROMPT, spec)
    for seq in res.sequences:
        adapted = _teacher_forced(peft_model, PROMPT, seq.tokens, 0.9)
        torch.testing.assert_close(torch.tensor(seq.logprobs), adapted, atol=1e-4, rtol=0)
        with peft_model.disable_adapter():
            plain = _teacher_forced(peft_model, PROMPT, seq.tokens, 0.9)
        assert (adapted - plain).abs().max() > 1e-3


def test_soft_capped_logits_are_the_training_logits():
    """HF's ``.logits`` (what the sampler reads) equal tunesmith's training logits
    (``models.forward.head_logits``: LM head + ``LogitTransform``) on a Gemma 2 whose final
    soft-cap binds hard, and differ from the uncapped head."""
    from tunesmith.models.forward import head_logits

    gemma = _tiny("gemma2", final_logit_softcapping=0.5)
    res = sample(gemma, PROMPT, SampleSpec(max_tokens=1, prompt_logprobs=True))
    with torch.no_grad():
        hidden = gemma.get_decoder()(input_ids=torch.tensor([PROMPT])).last_hidden_state[0]
        capped = torch.log_softmax(head_logits(gemma, hidden[:-1]), -1)
        uncapped = torch.log_softmax(gemma.get_output_embeddings()(hidden[:-1]).float(), -1)
    targets = torch.tensor(PROMPT[1:])[:, None]
    got = torch.tensor(res.prompt_logprobs[1:])
    torch.testing.assert_close(got, capped.gather(1, targets)[:, 0], atol=1e-5, rtol=0)
    assert (got - uncapped.gather(1, targets)[:, 0]).abs().max() > 1e-2


@pytest.mark.parametrize(
    ("prompt", "kwargs", "message"),
    [
        ([], {}, r"^prompt: the prompt is empty"),
        ([1, 2, 3, 320], {}, r"^prompt\[3\]: 320 is not a token id of this model \(0 to 319\)"),
        ([1, -2], {}, r"^prompt\[1\]: -2 is not a token id"),
        ([1, True], {}, r"^prompt\[1\]: True is not a token id"),
        (PROMPT, {"num_samples": 0}, r"^num_samples: must be from 1 to 1024, got 0"),
        (PROMPT, {"num_samples": 1025}, r"^num_samples: must be from 1 to 1024, got 1025"),
        (PROMPT, {"max_tokens": 0}, r"^sampling_params.max_tokens: must be at least 1 \(0 only with prompt"),
        (
            PROMPT,
            {"max_tokens": -1, "prompt_logprobs": True},
            r"^sampling_params.max_tokens: must be at least",
        ),
        (
            PROMPT,
            {"max_tokens": 27},
            r"^sampling_params.max_tokens: the prompt's 6 tokens plus max_tokens 27 make 33, past the model's context of 32",
        ),
        (PROMPT, {"temperature": -0.1}, r"^sampling_params.temperature: must be a finite number >= 0"),
        (PROMPT, {"temperature": math.nan}, r"^sampling_params.temperature:"),
        (PROMPT, {"top_p": 0.0}, r"^sampling_params.top_p: must be in \(0, 1\], got 0.0"),
        (PROMPT, {"top_p": 1.5}, r"^sampling_params.top_p: must be in \(0, 1\], got 1.5"),
        (PROMPT, {"top_k": -2}, r"^sampling_params.top_k: must be -1 or 0 \(no limit\)"),
        (PROMPT, {"seed": -1}, r"^sampling_params.seed: must be an integer from 0"),
        (PROMPT, {"seed": 1.5}, r"^sampling_params.seed:"),
        (PROMPT, {"stop_token_ids": (3, 999)}, r"^sampling_params.stop\[1\]: 999 is not a token id"),
        (PROMPT, {"stop_strings": ("",)}, r"^sampling_params.stop\[0\]: a stop string must be a non-empty"),
        (PROMPT, {"topk_sample_logprobs": 129}, r"^topk_sample_logprobs: must be from 0 to 128, got 129"),
        (PROMPT, {"topk_prompt_logprobs": -1}, r"^topk_prompt_logprobs: must be from 0 to 128"),
        (PROMPT, {"prompt_logprobs_last_n": 2}, r"^prompt_logprobs_last_n: applies to prompt logprobs"),
        (
            PROMPT,
            {"prompt_logprobs_last_n": 6, "prompt_logprobs": True},
            r"^prompt_logprobs_last_n: must be from 1 to len\(prompt\) - 1 = 5, got 6",
        ),
    ],
)
def test_bad_requests_are_data_errors_naming_the_field(model, prompt, kwargs, message):
    with pytest.raises(DataError, match=message) as info:
        sample(model, prompt, SampleSpec(**kwargs), max_context=32)
    assert info.value.field == str(info.value).split(":")[0]


def test_topk_width_is_bounded_by_the_vocabulary():
    small = _tiny(vocab=40)
    with pytest.raises(DataError, match=r"^topk_prompt_logprobs: must be from 0 to 40, got 41"):
        sample(small, [1, 2, 3], SampleSpec(topk_prompt_logprobs=41))


@pytest.mark.parametrize("kind", ["byte_bpe", "sentencepiece"])
def test_windowed_stop_string_check_agrees_with_decoding_everything(kind, tiny_tokenizer, tmp_path):
    """The sampler decodes only the last few tokens to look for a stop string; on random token
    sequences (byte tokens that cut characters, SentencePiece leading spaces, special tokens)
    it must stop at exactly the token where a decode of the whole completion first shows it."""
    import random

    from tunesmith.tinker.sampler import _has_stop_string

    tok = tiny_tokenizer if kind == "byte_bpe" else factory.build_spm_tokenizer(tmp_path / "spm")
    rng = random.Random(0)
    checked = 0
    for _ in range(60):
        tokens = [rng.randrange(len(tok)) for _ in range(40)]
        full = tok.decode(tokens)
        for _ in range(4):
            size = rng.randint(1, 8)
            start = rng.randrange(max(1, len(full) - size))
            stop = full[start : start + size]
            if not stop or "\ufffd" in stop:
                continue
            spec = SampleSpec(stop_strings=(stop,))
            first_full = next((j for j in range(1, 41) if stop in tok.decode(tokens[:j])), None)
            first_window = next((j for j in range(1, 41) if _has_stop_string(tok, tokens[:j], spec)), None)
            assert first_window == first_full, (stop, tokens)
            checked += 1
    assert checked > 100


@pytest.mark.parametrize(("arch", "chunk"), [("llama", 4), ("gemma2", 5)])
def test_a_scored_prompt_prefilled_in_pieces_is_the_prompt_prefilled_whole(arch, chunk, monkeypatch):
    """A scored prompt goes through the cache in PREFILL_CHUNK-token pieces; on a Llama and on a
    Gemma 2 whose 16-token sliding window is shorter than the 30-token prompt, the prompt's
    log-probs and top-k, and the greedy continuation after it, equal a full forward pass's."""
    import tunesmith.tinker.sampler as sampler

    m = _tiny(arch, seed=3)
    prompt = [(7 * i + 3) % 300 + 1 for i in range(30)]
    logp = torch.log_softmax(_logits(m, prompt)[:-1], -1)
    ref = logp.gather(1, torch.tensor(prompt[1:])[:, None])[:, 0]
    toks, lps = _greedy_reference(m, prompt, 5)
    monkeypatch.setattr(sampler, "PREFILL_CHUNK", chunk)
    for last_n in (None, 1, 9, 29):
        spec = SampleSpec(
            max_tokens=5,
            temperature=0.0,
            prompt_logprobs=True,
            topk_prompt_logprobs=2,
            prompt_logprobs_last_n=last_n,
        )
        res = sample(m, prompt, spec)
        first = 1 if last_n is None else len(prompt) - last_n
        got = torch.tensor(res.prompt_logprobs)
        assert got[:first].isnan().all() and not got[first:].isnan().any()
        torch.testing.assert_close(got[first:], ref[first - 1 :], atol=1e-5, rtol=0)
        assert res.topk_prompt[0][first:] == logp.topk(2, -1).indices[first - 1 :].tolist()
        assert len(res.topk_prompt[0]) == len(prompt)
        assert res.sequences[0].tokens == toks
        torch.testing.assert_close(
            torch.tensor(res.sequences[0].logprobs), torch.tensor(lps), atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("arch", factory.ARCHS)
def test_every_family_samples_what_its_full_forward_says(arch):
    """Greedy against the uncached argmax loop, and seeded samples whose rows stop at different
    steps (so the cache is cut down mid-decode) against a teacher-forced forward, per family."""
    m = _tiny(arch, seed=2)
    toks, lps = _greedy_reference(m, PROMPT, 4)
    greedy = sample(m, PROMPT, SampleSpec(max_tokens=4, temperature=0.0)).sequences[0]
    assert greedy.tokens == toks
    torch.testing.assert_close(torch.tensor(greedy.logprobs), torch.tensor(lps), atol=1e-5, rtol=0)
    stops = tuple(range(0, 320, 3))
    spec = SampleSpec(num_samples=5, max_tokens=6, temperature=1.0, seed=4, stop_token_ids=stops)
    for seq in sample(m, PROMPT, spec).sequences:
        ref = _teacher_forced(m, PROMPT, seq.tokens, 1.0)
        torch.testing.assert_close(torch.tensor(seq.logprobs), ref, atol=1e-4, rtol=0)


def test_a_model_with_nan_weights_is_a_model_error():
    from tunesmith.errors import ModelError

    m = _tiny(seed=5)
    with torch.no_grad():
        m.lm_head.weight[3] = math.nan
    with pytest.raises(ModelError, match="logits at sampling step 0 are NaN"):
        sample(m, PROMPT, SampleSpec(max_tokens=3))


def test_resolve_stop_maps_the_sdk_stop_field():
    from tunesmith.tinker.sampler import resolve_stop

    assert resolve_stop(None, [0, 2]) == ((0, 2), ())  # implicit EOS
    assert resolve_stop([], [0]) == ((), ())  # nothing stops it, not even EOS
    assert resolve_stop("\n\n", [0]) == ((), ("\n\n",))
    assert resolve_stop(["a", "b"], [0]) == ((), ("a", "b"))
    assert resolve_stop([5, 7], [0]) == ((5, 7), ())
    with pytest.raises(DataError, match=r"^sampling_params.stop\[1\]: 'x' is not a token id like the first"):
        resolve_stop([5, "x"], [0])
    with pytest.raises(DataError, match=r"^sampling_params.stop\[1\]: 3 is not a string like the first"):
        resolve_stop(["x", 3], [0])
    with pytest.raises(
        DataError, match=r"^sampling_params.stop\[0\]: True is neither a string nor a token id"
    ):
        resolve_stop([True], [0])
    with pytest.raises(DataError, match=r"^sampling_params.stop: must be a string, a list"):
        resolve_stop(3, [0])
    # The SDK's own SamplingParams accepts each of these forms as sent.
    tinker = pytest.importorskip("tinker")
    for stop in (None, [], "\n", ["a"], [5, 7]):
        assert tinker.types.SamplingParams(stop=stop).stop == stop
