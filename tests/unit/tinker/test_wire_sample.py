"""tunesmith.tinker.wire.encode_sample_response, read back by the tinker SDK's own
``deserialize_proto_response`` (what its futures call on a protobuf ``SampleResponse``) and run
through the SDK's own post-processing of a sample (sequence ids, the ``prompt_logprobs_last_n``
check)."""

from __future__ import annotations

import math

import factory
import numpy as np
import pytest
import torch

tinker = pytest.importorskip(
    "tinker", reason="the tinker SDK is not installed (pip install 'tunesmith[tinker]')"
)

from tinker import types as T  # noqa: E402
from tinker.lib.public_interfaces.sampling_client import (  # noqa: E402
    _attach_sequence_ids,
    _check_prompt_logprobs_last_n_honored,
)
from tinker.proto.response_conv import deserialize_proto_response  # noqa: E402

from tunesmith.tinker.sampler import SampledSequence, SampleResult, SampleSpec, sample  # noqa: E402
from tunesmith.tinker.wire import encode_sample_response  # noqa: E402

PROMPT = [5, 17, 3, 42, 8, 99]


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(factory.model_config("llama", 320)).eval()


def _roundtrip(result: SampleResult) -> T.SampleResponse:
    return deserialize_proto_response(encode_sample_response(result), T.SampleResponse)


def test_a_full_sample_reads_back_as_the_sdk_types(model):
    stops = tuple(range(0, 320, 5))  # some rows stop early: "stop" and "length" both travel
    spec = SampleSpec(
        num_samples=6,
        max_tokens=6,
        temperature=0.9,
        seed=8,
        stop_token_ids=stops,
        prompt_logprobs=True,
        topk_prompt_logprobs=3,
        topk_sample_logprobs=2,
    )
    res = sample(model, PROMPT, spec)
    back = _roundtrip(res)
    assert len(back.sequences) == 6
    assert {s.stop_reason for s in back.sequences} == {"stop", "length"}
    for mine, theirs in zip(res.sequences, back.sequences):
        assert theirs.stop_reason == mine.stop_reason
        assert theirs.tokens == mine.tokens and theirs.tokens_np.dtype == np.int32
        assert theirs.logprobs == pytest.approx(mine.logprobs, abs=1e-6)
        assert theirs.topk_logprobs == [
            [(i, pytest.approx(lp, abs=1e-6)) for i, lp in zip(ids, lps)] for ids, lps in zip(*mine.topk)
        ]
    # Prompt: NaN at position 0 reads back as None; the top-k row there (empty cells) as None.
    assert back.prompt_logprobs[0] is None
    assert back.prompt_logprobs[1:] == pytest.approx(res.prompt_logprobs[1:], abs=1e-6)
    assert back.topk_prompt_logprobs[0] is None
    assert back.topk_prompt_logprobs[1:] == [
        [(i, pytest.approx(lp, abs=1e-6)) for i, lp in zip(ids, lps)]
        for ids, lps in zip(res.topk_prompt[0][1:], res.topk_prompt[1][1:])
    ]
    # The SDK stamps the asample future's ids on the sequences, one per requested sample.
    ids = [f"s{i}" for i in range(6)]
    assert [s.sequence_id for s in _attach_sequence_ids(back, ids).sequences] == ids


def test_unrequested_fields_are_absent(model):
    back = _roundtrip(sample(model, PROMPT, SampleSpec(max_tokens=3, temperature=0.0)))
    assert back.prompt_logprobs is None and back.topk_prompt_logprobs is None
    assert back.sequences[0].topk_logprobs is None
    assert back.target_prompt_logprobs is None and back.prompt_alt_tokens is None


def test_compute_logprobs_and_prompt_logprobs_last_n(model):
    # What compute_logprobs sends: one sample of max_tokens=1 with prompt log-probs.
    res = sample(model, PROMPT, SampleSpec(max_tokens=1, prompt_logprobs=True, prompt_logprobs_last_n=2))
    back = _roundtrip(res)
    assert back.prompt_logprobs[:-2] == [None] * (len(PROMPT) - 2)
    assert back.prompt_logprobs[-2:] == pytest.approx(res.prompt_logprobs[-2:], abs=1e-6)
    _check_prompt_logprobs_last_n_honored(back, 2)  # the SDK's own check of a server's answer
    with pytest.raises(RuntimeError, match="returned prompt logprobs before that suffix"):
        full = _roundtrip(sample(model, PROMPT, SampleSpec(max_tokens=1, prompt_logprobs=True)))
        _check_prompt_logprobs_last_n_honored(full, 2)  # and it would notice a server that ignored it


def test_empty_sequences_and_a_one_token_prompt(model):
    res = sample(
        model, [7], SampleSpec(num_samples=2, max_tokens=0, prompt_logprobs=True, topk_prompt_logprobs=2)
    )
    back = _roundtrip(res)
    assert [(s.tokens, s.stop_reason) for s in back.sequences] == [([], "length"), ([], "length")]
    assert back.prompt_logprobs == [None]
    assert back.topk_prompt_logprobs == [None]
    assert len(_attach_sequence_ids(back, ["a", "b"]).sequences) == 2


def test_hand_made_values_survive_exactly():
    res = SampleResult(
        sequences=[
            SampledSequence(
                [2**31 - 1, 0, 7],
                [-0.5, -1e-8, -40.25],
                "stop",
                ([[1, 2], [3, 4], [5, 6]], [[-1.0, -2.0]] * 3),
            ),
            SampledSequence([], [], "length", ([], [])),
        ],
        prompt_logprobs=[math.nan, -2.5, math.nan],
    )
    back = _roundtrip(res)
    assert back.sequences[0].tokens == [2**31 - 1, 0, 7]
    assert back.sequences[0].logprobs == [-0.5, np.float32(-1e-8), -40.25]
    assert back.sequences[0].topk_logprobs == [
        [(1, -1.0), (2, -2.0)],
        [(3, -1.0), (4, -2.0)],
        [(5, -1.0), (6, -2.0)],
    ]
    assert back.sequences[1].tokens == [] and back.sequences[1].topk_logprobs is None
    assert back.prompt_logprobs == [None, -2.5, None]


@pytest.mark.parametrize(
    ("seq", "message"),
    [
        (SampledSequence([1], [-1.0], "eos"), r"sequences\[0\].stop_reason: 'eos' is not 'stop' or 'length'"),
        (SampledSequence([1, 2], [-1.0], "stop"), r"sequences\[0\]: 1 log-probs for 2 tokens"),
        (SampledSequence([2**31], [-1.0], "stop"), r"sequences\[0\].tokens: a token id does not fit int32"),
        (
            SampledSequence([1, 2], [-1.0, -1.0], "stop", ([[1, 2], [3]], [[-1.0, -2.0], [-1.0]])),
            "not all 2 wide",
        ),
        (
            SampledSequence([1, 2], [-1.0, -1.0], "stop", ([[1]], [[-1.0]])),
            "1 id rows and 1 log-prob rows for 2",
        ),
    ],
)
def test_a_result_the_sampler_cannot_make_is_a_value_error(seq, message):
    with pytest.raises(ValueError, match=message):
        encode_sample_response(SampleResult(sequences=[seq]))
