"""``tunesmith export RUN --format hf|gguf|adapter --out DIR``; ``tunesmith merge`` is ``export --format hf``."""

from __future__ import annotations

from ..errors import TunesmithError
from .compute import add_threads_argument


def _cmd_export(args) -> int:
    if args.format == "hf":
        from ..export.hf import export_hf

        r = export_hf(args.run, args.out, tolerance=args.tolerance, base=args.model)
        print(
            f"exported a merged model to {args.out} (verified: max |Δlogit| {r['max_abs_diff']:.2e} "
            f"<= {r['tolerance']:g}; stop ids {r['stop_ids']})"
        )
    elif args.format == "gguf":
        from ..export.hf import export_gguf

        r = export_gguf(
            args.run,
            args.out,
            quant=args.quant,
            tolerance=args.tolerance,
            modelfile=not args.no_modelfile,
            base=args.model,
            threads=args.threads,
        )
        g = r["gguf"]
        print(
            f"wrote {g['file']} ({g['arch']}, {g['quant']}, {g['tensors']} tensors, {g['bytes'] / 2**20:.1f} MiB; "
            "verified by reading it back)"
        )
        if r.get("modelfile"):
            print(f"wrote {r['modelfile']} (ollama create NAME -f {r['modelfile']})")
    else:
        if args.model:
            raise TunesmithError("--model names the base to merge into: it applies to --format hf and gguf")
        from ..export.card import export_adapter

        r = export_adapter(args.run, args.out)
        print(f"exported the adapter to {args.out} ({', '.join(r['files'])})")
    return 0


def _add_hf_arguments(p) -> None:
    p.add_argument("run", help="run directory, adapter folder or model folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", help="base model folder (default: the one the adapter names)")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max |merged - adapter| logit difference")
    add_threads_argument(p, "merge, convert and quantise with")


def add_export_commands(sub) -> None:
    p = sub.add_parser(
        "export", help="export a run: merged HF folder, GGUF + Ollama Modelfile, or adapter + card"
    )
    _add_hf_arguments(p)
    p.add_argument(
        "--format",
        choices=["hf", "gguf", "adapter"],
        default="hf",
        help="hf: merged model folder | gguf: GGUF + Ollama Modelfile | adapter: PEFT adapter + model card",
    )
    from ..export.llama_quantize import K_QUANTS  # light: no numpy / gguf at parser build

    p.add_argument(
        "--quant",
        choices=("f16", "q8_0", *K_QUANTS),
        default="f16",
        help="GGUF weight type (default f16); the K-quants (q4_K_M …) run llama.cpp's quantiser (docs/export.md)",
    )
    p.add_argument("--no-modelfile", action="store_true", help="GGUF only, no Ollama Modelfile")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "merge", help="merge an adapter into its base model, verified (the same as export --format hf)"
    )
    _add_hf_arguments(p)
    p.set_defaults(func=_cmd_export, format="hf")
