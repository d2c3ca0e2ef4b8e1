"""``tunesmith serve``: the OpenAI-compatible server over a base model and its adapters."""

from __future__ import annotations

from ..errors import TunesmithError
from .compute import add_threads_argument
from .options import add_listen_arguments


def _cmd_serve(args) -> int:
    import os

    from ..serve.run import serve
    from ..serve.server import InferenceServer

    adapters = []
    for spec in args.adapter:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise TunesmithError(
                f"--adapter {spec!r}: expected NAME=PATH (e.g. --adapter colors=runs/colors)"
            )
        adapters.append((name, path))
    api_key = args.api_key or os.environ.get("TUNESMITH_API_KEY") or None
    server = InferenceServer(
        args.model,
        model_id=args.model_id,
        device=args.device,
        dtype=args.dtype,
        max_batch=args.max_batch,
        context_length=args.context_length,
        start=False,
    )
    for name, path in adapters:
        server.add_adapter(name, path)
    ids = ", ".join(m.id for m in server.models())
    print(
        f"serving {ids} on http://{args.host}:{args.port}/v1" + (" (API key required)" if api_key else ""),
        flush=True,
    )
    serve(
        server,
        host=args.host,
        port=args.port,
        api_key=api_key,
        adapter_root=args.adapter_root,
        log_level=args.log_level,
    )
    return 0


def add_serve_command(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="inference: serve a model and its adapters over OpenAI's chat/completions API "
        "(the fine-tuning service is `server`)",
    )
    p.add_argument("--model", required=True, help="base model folder (or a run / adapter folder)")
    p.add_argument("--model-id", help="id the base answers to (default: its folder name)")
    p.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="serve a LoRA adapter (folder or run dir) as model NAME (repeatable)",
    )
    add_listen_arguments(p)
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (or set TUNESMITH_API_KEY)")
    p.add_argument("--adapter-root", help="enable POST/DELETE /v1/adapters for folders under this directory")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16"
    )
    p.add_argument("--max-batch", type=int, default=16, help="sequences decoded together (default 16)")
    p.add_argument("--context-length", type=int, help="override the model's max_position_embeddings")
    add_threads_argument(p, "generate with")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="server log verbosity",
    )
    p.set_defaults(func=_cmd_serve)
