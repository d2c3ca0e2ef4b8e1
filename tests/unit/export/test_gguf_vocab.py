"""Which llama.cpp tokenizer a tokenizer.json maps to, and the SentencePiece score derivation."""

from __future__ import annotations

import json

import factory
import pytest

from tunesmith.errors import ModelError
from tunesmith.export.gguf_vocab import (
    _LLAMA3_REGEX,
    _QWEN2_REGEX,
    added_special_tokens,
    check_spm_merges,
    spm_vocab,
    tokenizer_kind,
)

SP = "\u2581"
LEGACY_NORM = {
    "type": "Sequence",
    "normalizers": [
        {"type": "Prepend", "prepend": SP},
        {"type": "Replace", "pattern": {"String": " "}, "content": SP},
    ],
}


BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
DIGITS = {"type": "Digits", "individual_digits": True}


def _bpe(*steps) -> dict:
    return {
        "model": {"type": "BPE"},
        "pre_tokenizer": steps[0] if len(steps) == 1 else {"type": "Sequence", "pretokenizers": list(steps)},
    }


def _split(regex: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


def _spm(normalizer=None, pre=None) -> dict:
    return {"model": {"type": "BPE", "byte_fallback": True}, "normalizer": normalizer, "pre_tokenizer": pre}


def test_tokenizer_kinds():
    assert tokenizer_kind({"model": {"type": "BPE"}, "pre_tokenizer": {"type": "ByteLevel"}}).pre == "gpt-2"
    legacy = tokenizer_kind(_spm(LEGACY_NORM))
    assert (legacy.model, legacy.add_space_prefix) == ("llama", True)
    always = tokenizer_kind(_spm(pre={"type": "Metaspace", "replacement": SP, "prepend_scheme": "always"}))
    never = tokenizer_kind(_spm(pre={"type": "Metaspace", "replacement": SP, "prepend_scheme": "never"}))
    assert (always.model, always.add_space_prefix, never.add_space_prefix) == ("llama", True, False)


def test_byte_level_pre_tokenizers_get_the_llama_cpp_name_with_the_same_split():
    no_regex = dict(BYTE_LEVEL, use_regex=False)
    assert tokenizer_kind(_bpe(BYTE_LEVEL)).pre == "gpt-2"
    # SmolLM2's / StarCoder's tokenizer.json: each digit alone, then GPT-2's regex. Two llama.cpp
    # names split so; they differ in cleaning spaces before punctuation when detokenising.
    assert tokenizer_kind(_bpe(DIGITS, BYTE_LEVEL)).pre == "smollm"
    assert tokenizer_kind(_bpe(DIGITS, BYTE_LEVEL), clean_spaces=True).pre == "starcoder"
    assert tokenizer_kind(_bpe(_split(_LLAMA3_REGEX), no_regex)).pre == "llama-bpe"
    assert tokenizer_kind(_bpe(_split(_QWEN2_REGEX), no_regex)).pre == "qwen2"


@pytest.mark.parametrize(
    "tj, message",
    [
        (
            _bpe(dict(DIGITS, individual_digits=False), BYTE_LEVEL),
            "pre-tokenizer is not one",
        ),  # digit runs kept
        (_bpe(BYTE_LEVEL, DIGITS), "pre-tokenizer is not one"),  # digits split after GPT-2's regex
        (
            _bpe(dict(_split(_LLAMA3_REGEX), behavior="Removed"), dict(BYTE_LEVEL, use_regex=False)),
            "pre-tokenizer is not one",
        ),  # the split drops what it matches
        (_bpe(dict(BYTE_LEVEL, add_prefix_space=True)), "adds a space before the first word"),
        (_spm(pre={"type": "Metaspace", "replacement": SP, "prepend_scheme": "first"}), "only to the first"),
        (_spm({"type": "NFC"}), "not SentencePiece's"),
        ({"model": {"type": "Unigram"}}, "Unigram"),
        ({"model": {"type": "BPE"}, "pre_tokenizer": {"type": "Whitespace"}}, "pre-tokenizer is not one"),
    ],
)
def test_unmatched_tokenizers_are_refused_with_the_reason(tj, message):
    with pytest.raises(ModelError, match=message):
        tokenizer_kind(tj)


def test_scores_follow_the_first_merge_of_each_token():
    vocab = {t: i for i, t in enumerate(["a", "b", "c", "ab", "bc", "abc"])}
    merges = [("b", "c"), ("a", "b"), ("a", "bc"), ("ab", "c")]  # "abc" made twice, consecutively
    assert check_spm_merges(vocab, merges) == {"bc": 0, "ab": 1, "abc": 2}


def test_merges_llama_cpp_would_apply_differently_are_refused():
    vocab = {t: i for i, t in enumerate(["a", "b", "c", "ab", "bc", "abc"])}
    with pytest.raises(ModelError, match="'abc' can be joined from 'ab' \\+ 'c'"):
        check_spm_merges(vocab, [("a", "b"), ("b", "c"), ("a", "bc")])  # closure: ("ab", "c") missing
    with pytest.raises(ModelError, match="not consecutive"):
        check_spm_merges(vocab, [("a", "b"), ("a", "bc"), ("b", "c"), ("ab", "c")])


def test_spm_vocab_types_and_scores(tmp_path):
    import gguf

    tok = factory.build_spm_tokenizer(tmp_path, vocab_size=400)
    tj = json.loads((tmp_path / "tokenizer.json").read_text())
    tokens, scores, types = spm_vocab(tok, tj, len(tok))
    assert tokens[:4] == ["<unk>", "<s>", "</s>", "<0x00>"] and tokens[258] == "<0xFF>"
    assert types[:4] == [
        gguf.TokenType.UNKNOWN,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
        gguf.TokenType.BYTE,
    ]
    im_start = tokens.index("<|im_start|>")
    assert (types[im_start], scores[im_start]) == (gguf.TokenType.CONTROL, -1000.0)
    merged = [s for s, t, ty in zip(scores, tokens, types) if ty == gguf.TokenType.NORMAL and len(t) > 1]
    assert merged == sorted(merged, reverse=True) and merged[0] == 0.0  # ids in merge order: scores fall


def test_bos_is_added_where_training_added_it_and_eos_never(tiny_tokenizer, tmp_path):
    tok = factory.build_spm_tokenizer(tmp_path, vocab_size=300)
    assert added_special_tokens(tiny_tokenizer) == {"bos": False, "eos": False}
    tok.add_bos_token = False  # the renderer adds BOS only where add_bos_token says so
    assert added_special_tokens(tok) == {"bos": False, "eos": False}
    tok.add_bos_token, tok.add_eos_token = True, True
    assert added_special_tokens(tok) == {"bos": True, "eos": False}
