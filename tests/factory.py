"""Builders for tiny tokenizers, models and datasets, made locally in seconds (no network)."""

from __future__ import annotations

import json
import random
from pathlib import Path

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]

WORDS = (
    "the a an of to in is was for on with as by at from that this it be are or and not but "
    "kettle water tea boil warm cold hot red blue green small large fast slow one two three four "
    "five six seven eight nine ten hello thanks please yes no what when where how why which who "
    "user assistant system answer question color number day night light dark sun moon"
).split()


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) + "." for _ in range(n)]


def build_tokenizer(
    path: Path, vocab_size: int = 320, extra_special: list[str] | None = None, chat_template: str = CHATML
):
    """Byte-level BPE trained on a small synthetic corpus, saved as a HF tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIALS + list(extra_special or [])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus() + ["user assistant system\n"] * 20, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
        additional_special_tokens=specials[1:3] + specials[4:],
    )
    fast.chat_template = chat_template
    path.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(path)
    return fast


def build_spm_tokenizer(path: Path, vocab_size: int = 400):
    """A Llama-2-style tokenizer (SentencePiece BPE with byte fallback, in HF form) + ChatML.

    Laid out as Hugging Face converts a SentencePiece model: ``<unk> <s> </s>``, the 256
    ``<0xXX>`` byte tokens, then pieces; the normalizer turns spaces into ``▁`` and prepends one;
    the merges are *every* pair of pieces whose join is a piece, ordered by that piece's id
    (SentencePiece's score order). The pieces come from a BPE trained on the synthetic corpus."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    space, base = "\u2581", ["<unk>", "<s>", "</s>"]
    norm = normalizers.Sequence([normalizers.Prepend(space), normalizers.Replace(" ", space)])
    draft = Tokenizer(models.BPE(unk_token="<unk>"))
    draft.normalizer = norm
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 256, special_tokens=base, show_progress=False)
    draft.train_from_iterator(corpus() + ["user assistant system\n"] * 20, trainer)
    learned = sorted(draft.get_vocab().items(), key=lambda kv: kv[1])
    pieces = base + [f"<0x{b:02X}>" for b in range(256)] + [t for t, _ in learned if t not in base]
    vocab = {t: i for i, t in enumerate(pieces)}
    merges = sorted(
        ((t[:k], t[k:]) for t in pieces[259:] for k in range(1, len(t)) if t[:k] in vocab and t[k:] in vocab),
        key=lambda m: (vocab[m[0] + m[1]], vocab[m[0]], vocab[m[1]]),
    )
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    )
    tok.normalizer = norm
    tok.decoder = decoders.Sequence(
        [decoders.Replace(space, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = CHATML
    path.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(path)
    return fast


def model_config(arch: str, vocab_size: int, **overrides):
    """A tiny config of a model family (2 layers, hidden 64, GQA 4/2 heads)."""
    import transformers as tf

    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=0,
    )
    common.update(overrides)
    if arch == "llama":
        return tf.LlamaConfig(**common)
    if arch == "mistral":
        return tf.MistralConfig(sliding_window=None, **common)
    if arch == "qwen2":
        return tf.Qwen2Config(**common)
    if arch == "qwen3":
        return tf.Qwen3Config(head_dim=16, **common)
    if arch == "gemma":
        return tf.GemmaConfig(head_dim=16, **common)
    if arch == "gemma2":
        gemma2 = dict(
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=16,
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
        )
        return tf.Gemma2Config(**{**gemma2, **common})
    if arch == "gemma3":
        gemma3 = dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=16)
        return tf.Gemma3TextConfig(**{**gemma3, **common})
    if arch == "phi3":
        return tf.Phi3Config(sliding_window=None, **common)
    raise ValueError(arch)


ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"]


def build_model(path: Path, arch: str = "llama", vocab_size: int = 320, seed: int = 0, **overrides):
    """Random-init tiny causal LM saved (safetensors) at ``path``; returns the model."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config(arch, vocab_size, **overrides))
    model.save_pretrained(path, safe_serialization=True)
    return model


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


COLORS = {
    "apple": "red",
    "sky": "blue",
    "grass": "green",
    "sun": "yellow",
    "night": "dark",
    "snow": "white",
    "coal": "black",
    "orange": "orange",
}


def color_chats(n: int, seed: int = 0) -> list[dict]:
    """A learnable task: 'what color is the X?' -> 'the X is C.' (facts repeat across examples)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        thing = rng.choice(sorted(COLORS))
        turns = [{"role": "system", "content": "you answer in one line."}] if rng.random() < 0.3 else []
        turns += [
            {"role": "user", "content": f"what color is the {thing}?"},
            {"role": "assistant", "content": f"the {thing} is {COLORS[thing]}."},
        ]
        rows.append({"messages": turns})
    return rows


def preference_pairs(n: int, seed: int = 0, style: str = "messages") -> list[dict]:
    """A learnable preference: the chosen answer starts with 'yes,', the rejected with 'no,'
    (the rest of the answer is the same random sentence). ``style``: ``messages`` (prompt /
    chosen / rejected message lists), ``strings`` (raw strings) or ``openai`` (OpenAI DPO rows)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) + "?"
        body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) + "."
        chosen, rejected = f"yes, {body}", f"no, {body}"
        if style == "strings":
            rows.append({"prompt": question + "\n", "chosen": chosen, "rejected": rejected})
        elif style == "openai":
            rows.append(
                {
                    "input": {"messages": [{"role": "user", "content": question}]},
                    "preferred_output": [{"role": "assistant", "content": chosen}],
                    "non_preferred_output": [{"role": "assistant", "content": rejected}],
                }
            )
        else:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": question}],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )
    return rows


def kto_rows(n: int, seed: int = 0) -> list[dict]:
    """The preference of :func:`preference_pairs` as unpaired KTO rows (half desirable)."""
    rng = random.Random(seed)
    rows = []
    for pair in preference_pairs(n, seed):
        good = rng.random() < 0.5
        rows.append(
            {"prompt": pair["prompt"], "completion": pair["chosen" if good else "rejected"], "label": good}
        )
    return rows
