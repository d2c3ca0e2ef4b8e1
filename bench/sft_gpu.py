"""The GPU side of ``bench/sft_bench.py``: the ``qwen05b`` workload, a SmolLM2-shaped model when the
real weights are not on the machine, and what a child measures on CUDA.

``--workload qwen05b``: a random-init Qwen2 of the shape of Qwen2-0.5B (hidden 896, 24 layers,
14 heads / 2 KV heads, intermediate 4864, vocabulary 151,936, tied embeddings, q/k/v biases;
~494M parameters), seeded, trained on the 32M workload's chats with the 32M workload's tokenizer
(its ids are a subset of the model's vocabulary; the LM head still costs the full 151,936 rows).

``--smollm2-shape DIR``: the SmolLM2 workload without the GGUF — DIR holds SmolLM2-135M-Instruct's
config and tokenizer files but no weights (``bash bench/gpu_check.sh prepare`` copies them out of
the dequantised model); the bench initialises the weights randomly (seed 0). Tokens/s and memory
are those of the real model (same shapes, same tokens); the losses are not.

Stdlib only at import time: the bench's parent process imports this module.
"""

from __future__ import annotations

import shutil
from pathlib import Path

QWEN05B_SPEC = dict(
    vocab_size=151936,
    hidden_size=896,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    intermediate_size=4864,
    max_position_embeddings=1024,
    tie_word_embeddings=True,
    attention_bias=True,
)
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.gguf", "*.pt", "tunesmith-gguf.json")
"""Weights, and tunesmith's record of where they came from: not part of a model's shape."""


def qwen05b_spec(layers: int | None = None) -> dict:
    """The Qwen2-0.5B shape; ``layers`` overrides the depth (the CPU dry run's 2 layers)."""
    return {**QWEN05B_SPEC, **({"num_hidden_layers": layers} if layers else {})}


def build_random_model(model_dir: Path, spec: dict, seed: int, family: str, **config_extra) -> int:
    """Random-init ``family`` (llama | qwen2) of ``spec``, seeded, saved as safetensors into
    ``model_dir``; returns its parameter count (tied weights once)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_cls, model_cls = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    }[family]
    fields = {k: v for k, v in spec.items() if k != "attention_bias" or family != "qwen2"}
    torch.manual_seed(seed)
    model = model_cls(config_cls(**fields, use_cache=True, **config_extra))
    model.save_pretrained(model_dir, safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


def smollm2_from_shape(shape_dir: str | Path, model_dir: Path, seed: int) -> dict:
    """SmolLM2's config and tokenizer from ``shape_dir`` with random weights (seed ``seed``)
    saved into ``model_dir``; returns the model source record for the manifest."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    shape_dir = Path(shape_dir)
    if not (shape_dir / "config.json").exists():
        raise SystemExit(
            f"--smollm2-shape {shape_dir}: no config.json (run `bash bench/gpu_check.sh prepare`)"
        )
    copy_shape(shape_dir, model_dir)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir), dtype=torch.float32)
    model.save_pretrained(model_dir, safe_serialization=True)
    return {
        "weights": f"random init (seed {seed}) in the shape of SmolLM2-135M-Instruct",
        "shape_folder": str(shape_dir),
        "folder": str(model_dir),
    }


def copy_shape(model_dir: str | Path, dest: str | Path) -> list[str]:
    """Copy the config and tokenizer files of ``model_dir`` (no weights) into ``dest``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for f in sorted(Path(model_dir).iterdir()):
        if f.is_file() and not any(f.match(p) for p in WEIGHT_FILES):
            shutil.copy2(f, dest / f.name)
            copied.append(f.name)
    return copied


# ------------------------------------------------------------------------------------------------
# measured in a child
# ------------------------------------------------------------------------------------------------


def device_facts(device: str) -> dict:
    """Peak GPU memory of this process (``torch.cuda.max_memory_allocated``) and the card."""
    if device != "cuda":
        return {}
    import torch

    return {
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20,
        "peak_gpu_reserved_mb": torch.cuda.max_memory_reserved() / 2**20,
        "gpu": torch.cuda.get_device_name(),
    }


def attention_report(device: str) -> dict:
    """Which packed-attention kernel tunesmith planned for ``device`` and which ran (a tree from
    before the varlen kernels, e.g. ``bench/before_after.py --before``, ran the per-example loop)."""
    try:
        from tunesmith.models import varlen_kernels
    except ImportError:
        return {"planned": "loop", "ran": ["loop (a tree without models/varlen_kernels.py)"]}

    return {"planned": varlen_kernels.kernel_for(device), "ran": varlen_kernels.kernels_ran()}


def liger_missing(device: str) -> str | None:
    """Why the Liger setup cannot run here (None when it can)."""
    import importlib.util

    if device != "cuda":
        return "Liger's kernels are Triton GPU kernels (needs --device cuda)"
    if importlib.util.find_spec("liger_kernel") is None:
        return "the liger-kernel package is not installed in the peer's Python"
    return None


def gpu_matmul() -> dict:
    """bf16 matmul rate of the GPU (8192^3, best and median of 10 after 3 warm-ups)."""
    import statistics

    import torch

    n, reps = 8192, 10
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    flop = 2 * n**3
    return {
        "n": n,
        "reps": reps,
        "threads": 0,
        "dtype": "bf16",
        "gflops_best": round(flop / min(times) / 1e9, 1),
        "gflops_median": round(flop / statistics.median(times) / 1e9, 1),
    }
