"""Which llama.cpp tokenizer a tokenizer.json maps to, and the SentencePiece score derivation."""

from __future__ import annotations

import json

import pytest

import factory
from tunesmith.errors import ModelError
from tunesmith.export.gguf_vocab import check_spm_merges, spm_vocab, tokenizer_kind

SP = "\u2581"
LEGACY_NORM = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": SP},
                                                   {"type": "Replace", "pattern": {"String": " "}, "content": SP}]}


def _spm(normalizer=None, pre=None) -> dict:
    return {"model": {"type": "BPE", "byte_fallback": True}, "normalizer": normalizer, "pre_tokenizer": pre}


def test_tokenizer_kinds():
    assert tokenizer_kind({"model": {"type": "BPE"}, "pre_tokenizer": {"type": "ByteLevel"}}).pre == "gpt-2"
    legacy = tokenizer_kind(_spm(LEGACY_NORM))
    assert (legacy.model, legacy.add_space_prefix) == ("llama", True)
    always = tokenizer_kind(_spm(pre={"type": "Metaspace", "replacement": SP, "prepend_scheme": "always"}))
    never = tokenizer_kind(_spm(pre={"type": "Metaspace", "replacement": SP, "prepend_scheme": "never"}))
    assert (always.model, always.add_space_prefix, never.add_space_prefix) == ("llama", True, False)


@pytest.mark.parametrize("tj, message", [
    (_spm(pre={"type": "Metaspace", "replacement": SP, "prepend_scheme": "first"}), "only to the first"),
    (_spm({"type": "NFC"}), "not SentencePiece's"),
    ({"model": {"type": "Unigram"}}, "Unigram"),
    ({"model": {"type": "BPE"}, "pre_tokenizer": {"type": "Whitespace"}}, "pre-tokenizer is not one"),
])
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
    assert types[:4] == [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL, gguf.TokenType.BYTE]
    im_start = tokens.index("<|im_start|>")
    assert (types[im_start], scores[im_start]) == (gguf.TokenType.CONTROL, -1000.0)
    merged = [s for s, t, ty in zip(scores, tokens, types) if ty == gguf.TokenType.NORMAL and len(t) > 1]
    assert merged == sorted(merged, reverse=True) and merged[0] == 0.0  # ids in merge order: scores fall
