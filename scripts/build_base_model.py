#!/usr/bin/env python
"""Build tunesmith's small pretrained base model, with tunesmith itself, from random init.

Steps (each skipped when its output exists; the training step resumes from its newest
checkpoint, so the script can be stopped and re-run across sessions until it finishes):

1. corpus    ``scripts/build_corpus.py`` -> ``.cache/corpus/{train,heldout}.jsonl`` (Debian packages)
2. tokenizer ``scripts/train_tokenizer.py`` -> ``models/tunesmith-base/`` (byte-level BPE, ChatML)
3. init      a random-init Llama of the architecture below, saved with the tokenizer
4. pretrain  ``method: pretrain``, full fine-tuning, checkpoints every ``--save-every`` steps in
             ``--work`` (default ``~/.cache/tunesmith/base-pretrain``, outside the work tree)
5. export    the newest checkpoint's weights as bf16 safetensors into ``models/tunesmith-base/``,
             with the training curve in ``training_curve.json`` (``--export`` forces this step
             from whatever checkpoint exists, so a partially trained model can be shipped)

    python scripts/build_base_model.py                 # run / resume until done, then export
    python scripts/build_base_model.py --max-minutes 60  # stop after ~an hour (resumable)
    python scripts/build_base_model.py --export        # export the newest checkpoint now
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "models" / "tunesmith-base"
CORPUS = ROOT / ".cache" / "corpus"
WORK = Path(os.environ.get("TUNESMITH_CACHE", Path.home() / ".cache" / "tunesmith")) / "base-pretrain"

# ~9M parameters: big enough to learn English word statistics on ~10M tokens, small enough
# that a LoRA fine-tune takes minutes on 2 CPU cores.
ARCH = dict(
    hidden_size=256,
    intermediate_size=704,
    num_hidden_layers=8,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    rope_theta=10000.0,
    tie_word_embeddings=True,
    rms_norm_eps=1e-5,
    initializer_range=0.02,
)
SEQ = 256


def pretrain_config(work: Path, max_steps: int) -> dict:
    return {
        "model": str(work / "init"),
        "method": "pretrain",
        "data": {
            "train": str(CORPUS / "train.jsonl"),
            "eval": str(CORPUS / "heldout.jsonl"),
            "max_eval_examples": 60,
        },
        "adapter": {"type": "none"},
        "train": {
            "max_steps": max_steps,
            "lr": 2e-3,
            "weight_decay": 0.1,
            "adam_beta2": 0.95,
            "warmup_steps": 200,
            "scheduler": "cosine",
            "min_lr_ratio": 0.1,
            "max_grad_norm": 1.0,
            "batch_size": 16,
            "grad_accum": 1,
            "max_length": SEQ,
            "packing": True,
            "seed": 0,
            "save_every": 100,
            "keep_last": 2,
            "eval_every": 250,
            "dtype": "fp32",
            "progress": "lines",
            "log_every": 25,
        },
        "output_dir": str(work / "run"),
    }


def ensure_corpus() -> None:
    if not (CORPUS / "train.jsonl").is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "build_corpus.py")], check=True)


def ensure_tokenizer() -> None:
    if not (MODEL_DIR / "tokenizer.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "train_tokenizer.py")], check=True)


def ensure_init(work: Path) -> None:
    init = work / "init"
    if (init / "model.safetensors").is_file():
        return
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **ARCH,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    init.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(init, safe_serialization=True)
    tok.save_pretrained(init)
    n = sum(p.numel() for p in model.parameters())
    print(f"initialised a {n / 1e6:.1f}M-parameter Llama in {init}")


def export(work: Path) -> Path:
    """Newest checkpoint -> bf16 safetensors model folder + training curve."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, GenerationConfig, LlamaForCausalLM

    from tunesmith.engine.checkpoint import latest_checkpoint
    from tunesmith.models.template import stop_token_ids

    ckpt = latest_checkpoint(work / "run" / "checkpoints")
    if ckpt is None:
        raise SystemExit(f"no complete checkpoint in {work / 'run' / 'checkpoints'} to export")
    model = LlamaForCausalLM.from_pretrained(work / "init")
    missing, unexpected = model.load_state_dict(load_file(ckpt / "trainable.safetensors"), strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise SystemExit(f"checkpoint {ckpt} does not match the architecture: {missing} {unexpected}")
    model = model.to(torch.bfloat16)
    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    model.generation_config = GenerationConfig(
        eos_token_id=stop_token_ids(tok), pad_token_id=tok.pad_token_id, max_new_tokens=256
    )
    model.save_pretrained(MODEL_DIR, safe_serialization=True)
    step = json.loads((ckpt / "state.json").read_text())["step"]
    rows = [json.loads(x) for x in (work / "run" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r["step"] <= step]  # a running job may have logged further
    curve = {
        "checkpoint_step": step,
        "train": [[r["step"], round(r["loss"], 4)] for r in rows if "loss" in r and r["step"] % 25 == 0],
        "eval": [
            [r["step"], round(r["eval_loss"], 4), round(r["eval_ppl"], 2)] for r in rows if "eval_loss" in r
        ],
        "tokens_seen": sum(r.get("tokens_total", 0) for r in rows if "loss" in r),
    }
    (MODEL_DIR / "training_curve.json").write_text(json.dumps(curve, indent=1))
    # Patch the context length into the tokenizer config in place (re-saving it would rewrite
    # the file in the installed transformers' format, which older releases cannot read).
    tok_cfg_path = MODEL_DIR / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text())
    tok_cfg["model_max_length"] = ARCH["max_position_embeddings"]
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n")
    write_model_card(model, curve, pretrain_config(work, 0)["train"])
    print(f"exported {ckpt} -> {MODEL_DIR} (step {curve['checkpoint_step']})")
    return MODEL_DIR


def write_model_card(model, curve: dict, train: dict) -> None:
    """models/tunesmith-base/README.md from the architecture and the measured training curve."""
    n_params = sum(p.numel() for p in model.parameters())
    evals = curve["eval"]
    final = evals[-1] if evals else None
    rows = "\n".join(f"| {s} | {loss:.3f} | {ppl:.1f} |" for s, loss, ppl in evals)
    train_at = dict(curve["train"])
    card = f"""# tunesmith-base

A small Llama-architecture causal language model pretrained **from random initialisation by
tunesmith itself** (`method: pretrain`, full training) on freely licensed English prose from
Debian packages. It exists so that tunesmith's quickstart and tests can fine-tune a real
pretrained model on a machine with no network. It is a toy: it writes locally fluent but
aimless English and knows little about the world. Do not use it for anything else.

## Architecture

| | |
|---|---|
| parameters | {n_params / 1e6:.1f}M ({n_params:,}; input and output embeddings tied) |
| layers / hidden / MLP | {ARCH["num_hidden_layers"]} / {ARCH["hidden_size"]} / {ARCH["intermediate_size"]} (SwiGLU) |
| attention | {ARCH["num_attention_heads"]} query heads, {ARCH["num_key_value_heads"]} key/value heads (GQA), RoPE θ={ARCH["rope_theta"]:g} |
| context | trained on {SEQ}-token windows; `max_position_embeddings` {ARCH["max_position_embeddings"]} |
| vocabulary | 8,192 byte-level BPE tokens (`tokenizers`); specials `<|endoftext|>` (eos), `<|im_start|>`, `<|im_end|>` (end of turn), `<|pad|>` |
| chat template | ChatML: `<|im_start|>role\\ncontent<|im_end|>\\n`; generation stops at `<|im_end|>` or `<|endoftext|>` (`generation_config.json`) |
| weights | `model.safetensors`, bf16 |

## Training

Reproduce with `python scripts/build_base_model.py` (builds the corpus, trains the tokenizer,
initialises the model with seed 0, pretrains with checkpoints and resume, exports this folder).

- Data: the corpus of [MODEL_CARD_SOURCES.md](MODEL_CARD_SOURCES.md) — 22 Debian packages
  (public-domain literature and Bible, the Jargon File, desktop help, Debian and GNU manuals,
  Python / PostgreSQL / SQLite / Perl / Git / Linux documentation), 11.0M tokens, split into
  {SEQ}-token windows packed best-fit.
- Optimisation: AdamW (β₂ {train["adam_beta2"]}, weight decay {train["weight_decay"]}), peak lr
  {train["lr"]:g} with {train["warmup_steps"]} warm-up steps and cosine decay to
  {train["min_lr_ratio"]:g}×, gradient clipping {train["max_grad_norm"]}, {train["batch_size"]} × {SEQ}
  tokens per step, fp32 on CPU (2 cores, 1 thread).
- Exported from step {curve["checkpoint_step"]}; {curve["tokens_seen"]:,} tokens seen.
- Training loss: step 25 {train_at.get(25, float("nan")):.2f} → step {curve["train"][-1][0]} {curve["train"][-1][1]:.2f}
  (every 25 steps in `training_curve.json`).

Held-out loss (60 held-out documents of the corpus, never trained on):

| step | loss (nats/token) | perplexity |
|---|---|---|
{rows}

{f"Final held-out perplexity: **{final[2]:.1f}**." if final else ""}

## Limitations

Measured on this checkpoint: after ~5M tokens it has not yet learned in-context copying (given
"The secret word is pineapple. ... The secret word is", it does not favour " pineapple"), so a
fine-tune has to teach it to use the question and needs more epochs than a larger pretrained
model would. Continuing pretraining (re-run the build script with a larger `--max-steps`; it
resumes from the newest checkpoint) is the way to improve it.

## Licence

The corpus mixes public-domain texts with documentation under permissive and copyleft
licences (GPL-2, GFDL, CC-BY-SA-3.0, MPL-2.0, PSF, PostgreSQL; see MODEL_CARD_SOURCES.md). The
weights are a statistical model of that text, distributed with tunesmith for testing and
demonstration under the same terms as the most restrictive of those licences would require
of a derived work; treat them as a test fixture.
"""
    (MODEL_DIR / "README.md").write_text(card, encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument(
        "--max-steps", type=int, default=1200, help="total pretraining steps (16 x 256 tokens each)"
    )
    ap.add_argument("--max-minutes", type=float, default=None, help="stop (resumably) after this long")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--export", action="store_true", help="only export the newest checkpoint")
    args = ap.parse_args()
    if args.export:
        export(args.work)
        return 0
    ensure_corpus()
    ensure_tokenizer()
    ensure_init(args.work)
    overrides = [f"train.threads={args.threads}"] if args.threads else []
    cfg_path = args.work / "pretrain.yaml"
    import yaml

    cfg_path.write_text(yaml.safe_dump(pretrain_config(args.work, args.max_steps), sort_keys=False))
    cmd = [sys.executable, "-m", "tunesmith", "train", str(cfg_path)] + [
        a for o in overrides for a in ("--set", o)
    ]
    proc = subprocess.Popen(cmd)
    deadline = time.time() + args.max_minutes * 60 if args.max_minutes else None
    while proc.poll() is None:
        time.sleep(5)
        if deadline and time.time() > deadline:
            proc.terminate()  # checkpoints are atomic: the newest complete one is resumed next time
            proc.wait()
            print("time budget reached; re-run to resume")
            break
    if proc.returncode not in (0, None, -15):
        return proc.returncode
    export(args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
