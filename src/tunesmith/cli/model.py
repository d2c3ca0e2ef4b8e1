"""``tunesmith estimate`` (parameters and peak memory of a run before it starts) and
``tunesmith import`` (a GGUF file as an ordinary Hugging Face folder)."""

from __future__ import annotations

import json

from .compute import add_threads_argument
from .options import add_config_arguments


def _cmd_estimate(args) -> int:
    from ..config import load_config
    from ..methods import validate
    from ..models.memory import estimate_memory, format_table, gb

    cfg = load_config(args.config, args.set)
    validate(cfg)
    own = estimate_memory(cfg, device=args.device)
    modes = [m for m in ("full", "lora", "qlora") if m != own.mode] if args.compare else []
    estimates = [own] + [estimate_memory(cfg, mode=m, device=args.device) for m in modes]
    order = {"full": 0, "lora": 1, "dora": 1, "lora-8bit": 2, "qlora": 3}
    estimates.sort(key=lambda e: order.get(e.mode, 9))
    if args.json:
        print(json.dumps([e.to_dict() for e in estimates], indent=1))
        return 0
    print(
        f"model {cfg.model.path} on {own.device}: {own.tokens_per_pass} tokens per forward pass, "
        f"gradient checkpointing {'on' if cfg.train.gradient_checkpointing else 'off'}, "
        f"optimizer {cfg.train.optimizer}"
    )
    print(format_table(estimates, chosen=own.mode))
    print(
        f"\nthis config ({own.mode}): estimated peak {gb(own.peak)}"
        + (" (* marks it above)" if len(estimates) > 1 else "")
    )
    for note in own.notes:
        print(f"note: {note}")
    return 0


def _cmd_import(args) -> int:
    from ..models.gguf_import import import_gguf

    source = import_gguf(args.file, args.out, dtype=args.dtype)
    print(
        f"{source.folder}\n  from {source.quantization} GGUF {source.file} ({source.architecture}, "
        f"sha256 {source.sha256}); weights dequantised to {source.dtype}"
    )
    return 0


def add_model_commands(sub) -> None:
    """Register ``estimate`` and ``import`` on the top-level subparsers."""
    p = sub.add_parser(
        "import",
        help="dequantise a GGUF file into a Hugging Face folder",
        description="Dequantise a GGUF model file (weights, tokenizer, chat template) into an "
        "ordinary Hugging Face folder. Without --out it goes to tunesmith's cache "
        "(where naming the .gguf anywhere else finds it); see docs/gguf.md.",
    )
    p.add_argument("file", help="a .gguf file (an Ollama blob works too)")
    p.add_argument("--out", help="write the folder here (must not exist or be empty); default: the cache")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="dtype of the dequantised weights (default float32)",
    )
    add_threads_argument(p, "dequantise with")
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser("estimate", help="parameters and estimated peak memory of a training config")
    add_config_arguments(p, example="adapter.type=qlora")
    p.add_argument("--device", choices=["cpu", "cuda"], help="estimate for this device (default: the run's)")
    p.add_argument(
        "--no-compare",
        dest="compare",
        action="store_false",
        help="only the configured mode (default: also full / LoRA / QLoRA side by side)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_threads_argument(p, "build the model skeleton with")
    p.set_defaults(func=_cmd_estimate)
