#!/usr/bin/env python3
"""Train the tunesmith-base byte-level BPE tokenizer on the corpus from build_corpus.py.

* model: byte-level BPE (all 256 bytes in the base alphabet, so any text round-trips),
  ``ByteLevel(add_prefix_space=False)`` pre-tokenizer and decoder, no normaliser;
* special tokens, ids 0-3: ``<|endoftext|>`` (end of document / eos), ``<|im_start|>``,
  ``<|im_end|>`` (end of a chat turn: the generation stop token), ``<|pad|>``;
* training text: ``CORPUS/train.jsonl`` plus a few thousand ChatML conversations made from
  question/answer paragraph pairs of the corpus, so ``system``/``user``/``assistant`` and
  the newlines around them get their own merges;
* saved as a Hugging Face tokenizer folder (``tokenizer.json`` + ``tokenizer_config.json``)
  with a ChatML chat template. Model files (config, weights, generation config) are not
  written here.

The script then checks: lossless encode/decode on held-out text, special tokens encoded
as single ids, the chat template prefix-preserving; and prints tokens per word on
``CORPUS/heldout.jsonl``.

Usage: ``python scripts/train_tokenizer.py [--corpus .cache/corpus] [--out models/tunesmith-base]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a friendly and concise support assistant.",
    "You are a customer support agent. Answer clearly and politely.",
    "You answer questions about software and hardware in plain English.",
]
GREETINGS = ["", "", "", "Hi! ", "Hello, ", "Hey there. ", "Good morning! ", "Quick question: "]
HEADING_QUESTIONS = [
    "Can you tell me about {}?",
    "What should I know about {}?",
    "I need help with this: {}.",
    "{}? How does that work?",
    "Could you explain {} please?",
]


def read_texts(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["text"]


def question_answer_pairs(texts: list[str], rng: random.Random) -> list[tuple[str, str]]:
    """(question, answer) from corpus paragraphs: a paragraph ending in "?" followed by
    a prose answer, or a short heading (turned into a question) followed by prose."""
    pairs = []
    for text in texts:
        paragraphs = text.split("\n\n")
        for first, answer in zip(paragraphs, paragraphs[1:]):
            if not 10 <= len(answer.split()) <= 200 or answer.endswith("?"):
                continue
            if first.endswith("?") and 4 <= len(first.split()) <= 40:
                pairs.append((first, answer))
            elif 2 <= len(first.split()) <= 8 and first[-1].isalpha():
                heading = re.sub(r"^[\d.]+\s+", "", first)  # drop section numbers
                pairs.append((rng.choice(HEADING_QUESTIONS).format(heading), answer))
    return pairs


def chat_conversations(texts: list[str], count: int, seed: int) -> list[str]:
    """``count`` ChatML-rendered conversations (1-2 turns, system prompt 3 times in 4)."""
    rng = random.Random(seed)
    pairs = question_answer_pairs(texts, rng)
    rng.shuffle(pairs)
    conversations = []
    for i in range(min(count, len(pairs) // 2)):
        turns = [pairs[2 * i]] + ([pairs[2 * i + 1]] if rng.random() < 0.3 else [])
        messages = [] if rng.random() < 0.25 else [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}]
        for question, answer in turns:
            messages.append({"role": "user", "content": rng.choice(GREETINGS) + question})
            messages.append({"role": "assistant", "content": answer})
        conversations.append(
            "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        )
    return conversations


def without_special_tokens(text: str) -> Iterator[str]:
    """The pieces between special tokens: what BPE sees once special tokens are split."""
    pattern = "|".join(re.escape(token) for token in SPECIAL_TOKENS)
    yield from (piece for piece in re.split(pattern, text) if piece)


def train(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(
        (piece for text in texts for piece in without_special_tokens(text)), trainer=trainer
    )
    return tokenizer


def require(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"tokenizer check failed: {message}")


def check(tokenizer, heldout: list[str]) -> dict:
    """Round trip, special-token and chat-template checks; returns summary numbers."""
    for text in heldout[:200] + ["Tabs\tand  double spaces,\nnewlines\r\n, émigré ☕ 1.7 litres"]:
        ids = tokenizer.encode(text, add_special_tokens=False)
        require(tokenizer.decode(ids) == text, f"round trip of {text[:80]!r}")
    for token in SPECIAL_TOKENS:
        ids = tokenizer.encode(f"a{token}b", add_special_tokens=False)
        require(
            tokenizer.convert_tokens_to_ids(token) in ids and len(ids) == 3,
            f"{token} is not one token: {ids}",
        )
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!\nHow are you?"},
        {"role": "assistant", "content": "Fine, thanks."},
        {"role": "user", "content": "Great."},
    ]
    start, end = (tokenizer.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>"))
    previous: list[int] = []
    for n in range(1, len(messages) + 1):
        for prompt in (False, True):
            ids = tokenizer.apply_chat_template(
                messages[:n], add_generation_prompt=prompt, tokenize=True, return_dict=False
            )
            require(ids[: len(previous)] == previous, "chat template is not prefix-preserving")
            require(
                ids.count(start) == n + prompt and ids.count(end) == n,
                f"<|im_start|>/<|im_end|> not single tokens in {ids}",
            )
            previous = ids if not prompt else previous
    rendered = tokenizer.apply_chat_template(messages[1:2], add_generation_prompt=True, tokenize=False)
    require(
        rendered == "<|im_start|>user\nHello!\nHow are you?<|im_end|>\n<|im_start|>assistant\n",
        f"unexpected rendering {rendered!r}",
    )
    words = sum(len(text.split()) for text in heldout)
    tokens = sum(len(tokenizer.encode(text, add_special_tokens=False)) for text in heldout)
    return {
        "heldout_documents": len(heldout),
        "heldout_words": words,
        "heldout_tokens": tokens,
        "tokens_per_word": round(tokens / words, 4),
        "bytes_per_token": round(sum(len(t.encode()) for t in heldout) / tokens, 3),
    }


def make_portable(config_path: Path) -> None:
    """Let transformers 4.51+ load the folder too, not only 5.x: name the class
    ``PreTrainedTokenizerFast`` (5.x maps it to its backend), list the chat tokens under
    ``additional_special_tokens`` (5.x converts them) and inline the chat template (4.x
    reads it from the config; 5.x also finds ``chat_template.jinja``)."""
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["additional_special_tokens"] = config.pop("extra_special_tokens")
    config["chat_template"] = CHAT_TEMPLATE
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path(".cache/corpus"))
    parser.add_argument("--out", type=Path, default=Path("models/tunesmith-base"))
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--chat-examples", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", default="1", help="tokenizers threads (RAYON_NUM_THREADS)")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAYON_NUM_THREADS", args.threads)  # read when tokenizers starts

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    texts = list(read_texts(args.corpus / "train.jsonl"))
    heldout = list(read_texts(args.corpus / "heldout.jsonl"))
    chats = chat_conversations(texts, args.chat_examples, args.seed)
    print(f"training on {len(texts)} documents + {len(chats)} chat conversations", flush=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train(texts + chats, args.vocab_size),
        bos_token=None,
        unk_token=None,
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
        extra_special_tokens=["<|im_start|>", "<|im_end|>"],
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )
    summary = check(tokenizer, heldout)
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(args.out)
    make_portable(args.out / "tokenizer_config.json")
    check(AutoTokenizer.from_pretrained(args.out), heldout)  # the saved folder, reloaded
    summary.update(
        vocab_size=len(tokenizer),
        chat_conversations=len(chats),
        special_tokens={t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS},
    )
    print(json.dumps(summary, indent=2))
    sample = "<|im_start|>user\nHow do I reset my kettle?<|im_end|>\n"
    print("sample:", tokenizer.convert_ids_to_tokens(tokenizer.encode(sample)))


if __name__ == "__main__":
    main()
