"""The tokenizer half of a GGUF file: which llama.cpp tokenizer reproduces ours, and its vocabulary.

llama.cpp has one tokenizer per ``tokenizer.ggml.model``; a GGUF file only works if the one it
names splits text exactly as the Hugging Face tokenizer did in training. Two families are
exported, each recognised from ``tokenizer.json`` and refused with the reason otherwise:

* ``gpt2`` — byte-level BPE (GPT-2, StarCoder / SmolLM, Llama-3, Qwen2): tokens, types and
  merges; the split regex is named by ``tokenizer.ggml.pre`` (:func:`pre_tokenizer_name`).
* ``llama`` — SentencePiece-style BPE with byte fallback (Llama 2, Mistral 7B v0.1–v0.3,
  TinyLlama …): spaces become ``▁``, one ``▁`` is prepended to every text segment, characters
  outside the vocabulary fall back to ``<0xXX>`` byte tokens. llama.cpp's SPM tokenizer has no
  merge list: it repeatedly joins the adjacent pair whose joined text is a token with the highest
  *score*. :func:`spm_vocab` derives scores from the merge list (a token's score is minus the
  rank of its first merge) and checks that the two algorithms then agree (:func:`check_spm_merges`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import ModelError

SPACE = "\u2581"  # "▁", SentencePiece's visible space
_LLAMA3_REGEX = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)
_QWEN2_REGEX = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)


@dataclass
class TokenizerKind:
    """``model``: llama.cpp's tokenizer (``gpt2`` or ``llama``); ``pre``: the byte-level split
    regex's name (gpt2 only); ``add_space_prefix``: prepend ``▁`` to each segment (llama only)."""

    model: str
    pre: str | None = None
    add_space_prefix: bool = True


def _byte_level(step: dict, *, regex: bool) -> bool:
    """A ByteLevel step that splits with GPT-2's regex (``regex``) or not, adding no prefix space
    (llama.cpp never puts a space before the first word)."""
    return (
        step.get("type") == "ByteLevel"
        and bool(step.get("use_regex", True)) == regex
        and not step.get("add_prefix_space", False)
    )


def pre_tokenizer_name(tokenizer_json: dict, *, clean_spaces: bool = False) -> str:
    """llama.cpp's name for a byte-level tokenizer's pre-tokenizer (how text is split before BPE),
    recognised from the steps of ``tokenizer.json``; ModelError when no llama.cpp split is known
    to equal it. Each name below selects, in llama.cpp's ``llm_tokenizer_bpe``, exactly the split
    of the Hugging Face steps it is matched with:

    * ``ByteLevel`` with its regex -> ``gpt-2`` (GPT-2's regex);
    * ``Digits`` (each digit alone), then ``ByteLevel`` with its regex -> ``\\p{N}`` then GPT-2's
      regex: llama.cpp's StarCoder family (StarCoder, SmolLM …). Two of its names differ only in
      detokenising: ``starcoder`` drops a space before ``.,?!``, ``smollm`` keeps it; the one
      agreeing with the tokenizer's ``clean_up_tokenization_spaces`` (``clean_spaces``) is chosen;
    * a ``Split`` by the Llama-3 or Qwen2 regex, then ``ByteLevel`` without one -> ``llama-bpe`` /
      ``qwen2``.
    """
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if len(steps) == 1 and _byte_level(steps[0], regex=True):
        return "gpt-2"
    if (
        kinds == ["Digits", "ByteLevel"]
        and steps[0].get("individual_digits")
        and _byte_level(steps[1], regex=True)
    ):
        return "starcoder" if clean_spaces else "smollm"
    if (
        kinds == ["Split", "ByteLevel"]
        and _byte_level(steps[1], regex=False)
        and not steps[0].get("invert")
        and steps[0].get("behavior", "Isolated") == "Isolated"
    ):
        regex = (steps[0].get("pattern") or {}).get("Regex")
        if regex == _LLAMA3_REGEX:
            return "llama-bpe"
        if regex == _QWEN2_REGEX:
            return "qwen2"
    if any(s.get("type") == "ByteLevel" and s.get("add_prefix_space") for s in steps):
        raise ModelError(
            "GGUF export: the tokenizer adds a space before the first word (ByteLevel "
            "add_prefix_space); llama.cpp does not, so every text would tokenise differently"
        )
    raise ModelError(
        "GGUF export: the tokenizer's pre-tokenizer is not one llama.cpp is known to match "
        "(supported: GPT-2 byte-level, digits-then-GPT-2 (StarCoder, SmolLM), Llama-3, Qwen2); "
        f"got {json.dumps(pre)[:200]}"
    )


def _is_spm_normalizer(norm: dict | None) -> bool:
    """Llama 2's (legacy) normalizer: prepend ``▁``, then every space -> ``▁``."""
    if not norm or norm.get("type") != "Sequence":
        return False
    steps = norm.get("normalizers", [])
    return (
        len(steps) == 2
        and steps[0].get("type") == "Prepend"
        and steps[0].get("prepend") == SPACE
        and steps[1].get("type") == "Replace"
        and steps[1].get("pattern", {}).get("String") == " "
        and steps[1].get("content") == SPACE
    )


def tokenizer_kind(tokenizer_json: dict, *, clean_spaces: bool = False) -> TokenizerKind:
    """Which llama.cpp tokenizer reproduces ``tokenizer_json``; ModelError naming what differs.
    ``clean_spaces``: the tokenizer's ``clean_up_tokenization_spaces`` (see :func:`pre_tokenizer_name`)."""
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE":
        raise ModelError(f"GGUF export: tokenizer model {model.get('type')!r} is not exported (BPE only)")
    if not model.get("byte_fallback"):
        return TokenizerKind("gpt2", pre=pre_tokenizer_name(tokenizer_json, clean_spaces=clean_spaces))
    norm, pre = tokenizer_json.get("normalizer"), tokenizer_json.get("pre_tokenizer")
    if _is_spm_normalizer(norm) and pre is None:
        return TokenizerKind("llama", add_space_prefix=True)
    if norm is None and pre and pre.get("type") == "Metaspace" and pre.get("replacement") == SPACE:
        scheme = pre.get("prepend_scheme", "always" if pre.get("add_prefix_space", True) else "never")
        if scheme in ("always", "never"):
            return TokenizerKind("llama", add_space_prefix=scheme == "always")
        # llama.cpp prepends "▁" after every special token too; "first" does so only at the start,
        # so a chat prompt ("<|im_start|>user…") would tokenise differently in llama.cpp.
        raise ModelError(
            "GGUF export: this SentencePiece-style tokenizer prepends '▁' only to the first "
            "segment (Metaspace prepend_scheme 'first'); llama.cpp prepends it after every "
            "special token as well, so chat prompts would tokenise differently"
        )
    raise ModelError(
        "GGUF export: a byte-fallback BPE tokenizer whose normalizer / pre-tokenizer is not "
        "SentencePiece's ('▁' for spaces, one prepended); llama.cpp has no tokenizer that "
        f"matches it (normalizer {json.dumps(norm)[:120]}, pre-tokenizer {json.dumps(pre)[:120]})"
    )


def added_special_tokens(tokenizer) -> dict[str, bool]:
    """``{"bos": …, "eos": …}``: whether llama.cpp should put BOS before / EOS after a prompt.

    BOS as tunesmith's renderer trains: where the tokenizer's ``add_bos_token`` says so and it has
    one (a chat template that writes BOS itself is rendered without adding another). EOS never:
    training appends it after a completion, never after a prompt, and a prompt ending in EOS
    would tell the model the text is over."""
    bos = bool(
        getattr(tokenizer, "add_bos_token", False) and getattr(tokenizer, "bos_token_id", None) is not None
    )
    return {"bos": bos, "eos": False}


def byte_level_vocab(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """Token strings and types for ``gpt2``, as llama.cpp's ``get_vocab_base`` builds them."""
    import gguf

    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        if token in added:
            types.append(gguf.TokenType.CONTROL if decoder[i].special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, types


def _is_byte_token(token: str) -> bool:
    return len(token) == 6 and token.startswith("<0x") and token.endswith(">")


def merge_pairs(model: dict) -> list[tuple[str, str]]:
    """A BPE ``tokenizer.json`` model's merges as (left, right) pairs, in rank order (both the
    ``"a b"`` and the ``["a", "b"]`` spellings)."""
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]


def check_spm_merges(vocab: dict[str, int], merges: list[tuple[str, str]]) -> dict[str, int]:
    """Rank of each merged token's first merge, after checking that llama.cpp's score-ordered
    joining equals Hugging Face's rank-ordered BPE for this merge list. Two conditions suffice:

    1. closure — every split of a vocabulary token into two vocabulary tokens is a merge
       (llama.cpp joins *any* adjacent pair whose text is a token);
    2. grouping — the merges producing one token are consecutive in the list (llama.cpp ranks a
       pair by its product's score, HF by the pair's own rank).

    Tokenizers converted from a SentencePiece model satisfy both by construction (their merges
    are all such pairs, ordered by the product's score). ModelError names the first violation."""
    first: dict[str, int] = {}
    last_product = None
    for rank, (a, b) in enumerate(merges):
        product = a + b
        if product in first and product != last_product:
            raise ModelError(
                f"GGUF export: merges producing {product!r} are not consecutive (rank {first[product]} "
                f"and {rank}); llama.cpp's SentencePiece tokenizer would order them differently"
            )
        first.setdefault(product, rank)
        last_product = product
    pairs = set(merges)
    for token in vocab:
        if _is_byte_token(token):
            continue
        for k in range(1, len(token)):
            x, y = token[:k], token[k:]
            if x in vocab and y in vocab and (x, y) not in pairs:
                raise ModelError(
                    f"GGUF export: {token!r} can be joined from {x!r} + {y!r}, which is not a merge; "
                    "llama.cpp's SentencePiece tokenizer would join it where this tokenizer does not"
                )
    return first


def spm_vocab(tokenizer, tokenizer_json: dict, vocab_size: int) -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and types for ``llama`` (SentencePiece-style BPE with byte fallback).

    Scores: ``-rank`` of the token's first merge, so llama.cpp's highest-score-first joining
    follows the merge order; tokens no merge produces (single characters, ``<0xXX>`` bytes,
    specials) score 0: llama.cpp never compares them, as it never forms them by a join — except
    tokens added on top of the vocabulary, which get -1000 as in llama.cpp's converter."""
    import gguf

    model = tokenizer_json["model"]
    vocab = model["vocab"]
    first = check_spm_merges(vocab, merge_pairs(model))
    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    unk = model.get("unk_token")
    tokens, scores, types = [], [], []
    for i in range(vocab_size):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            scores.append(-1000.0)
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(token)
        if token == unk:
            scores.append(0.0)
            types.append(gguf.TokenType.UNKNOWN)
        elif token in added:
            # Specials of the base vocabulary (<s>, </s>) keep SentencePiece's 0; tokens added on
            # top get -1000, as in llama.cpp's converter. Either way they are matched whole.
            scores.append(0.0 if token in vocab else -1000.0)
            types.append(gguf.TokenType.CONTROL if decoder[i].special else gguf.TokenType.USER_DEFINED)
        elif _is_byte_token(token):
            scores.append(0.0)
            types.append(gguf.TokenType.BYTE)
        else:
            scores.append(-float(first[token]) if token in first else 0.0)
            types.append(gguf.TokenType.NORMAL)
    if not any(t == gguf.TokenType.BYTE for t in types):
        raise ModelError("GGUF export: a byte-fallback tokenizer without <0x00>..<0xFF> byte tokens")
    return tokens, scores, types
