"""The ``tunesmith`` command line: thin wrappers over the library."""

from __future__ import annotations

import argparse
import sys
import time

from .errors import TunesmithError

_START = time.time()


def _cmd_train(args) -> int:
    import os

    if args.nproc is not None and args.nproc < 1:
        raise TunesmithError(f"--nproc must be >= 1, got {args.nproc}")
    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_train(args)
    from .run import train

    resume = True if args.resume else False if args.no_resume else "auto"
    result = train(args.config, args.set, resume=resume, process_start=_START)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # rank 0 reports for the job
    summary = f"trained {result.steps} steps"
    if result.final_loss is not None:
        summary += f": final loss {result.final_loss:.4f}"
    if result.eval_loss is not None:
        summary += f", eval loss {result.eval_loss:.4f}"
    print(summary)
    return 0


def _launch_train(args) -> int:
    """``train --nproc N``: the same command on N local processes under torchrun."""
    from .config import load_config, validate
    from .engine.distributed import launch_local

    cfg = load_config(args.config, args.set)
    validate(cfg)  # config mistakes are reported once, before any process starts
    if cfg.train.parallel == "none":
        raise TunesmithError(
            f"--nproc {args.nproc}: set train.parallel to ddp or fsdp in {args.config} "
            "(or add --set train.parallel=ddp)"
        )
    forwarded = ["train", args.config, *[f"--set={item}" for item in args.set]]
    forwarded += ["--resume"] if args.resume else ["--no-resume"] if args.no_resume else []
    code = launch_local(args.nproc, forwarded)
    if code != 0:
        print(
            f"error: distributed training stopped (torchrun exit status {code}); the failing "
            "rank's error is above. Checkpoints written so far are kept: rerun to resume.",
            file=sys.stderr,
        )
    return code


def _cmd_merge(args) -> int:
    from .export.merge import merge_adapter

    report = merge_adapter(args.run, args.out, base=args.model, tolerance=args.tolerance)
    print(
        f"merged {report['adapter']} into {report['base']} -> {args.out} "
        f"(verified: max |Δlogit| {report['max_abs_diff']:.2e} <= {report['tolerance']:g})"
    )
    return 0


def _cmd_generate(args) -> int:
    from .models.generate import generate, load_for_inference

    model, tok = load_for_inference(args.model, args.adapter)
    prompts = args.prompt or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for text in generate(
        model,
        tok,
        prompts,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        system=args.system,
    ):
        print(text)
    return 0


def _cmd_chat(args) -> int:
    from .models.generate import generate, load_for_inference

    model, tok = load_for_inference(args.model, args.adapter)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    print("chatting; an empty line or Ctrl-D quits.")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            break
        if not line:
            break
        messages.append({"role": "user", "content": line})
        (reply,) = generate(
            model,
            tok,
            [messages],
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
        )
        print(f"assistant> {reply}")
        messages.append({"role": "assistant", "content": reply})
    return 0


def _cmd_config(args) -> int:
    import yaml

    from .config import RunConfig, config_to_dict

    print(yaml.safe_dump(config_to_dict(RunConfig()), sort_keys=False), end="")
    return 0


def _add_sampling(p) -> None:
    p.add_argument("--model", required=True, help="model folder, adapter folder or run directory")
    p.add_argument("--adapter", help="LoRA adapter folder applied over --model")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunesmith", description="Fine-tune open language models on your data."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train from a YAML config")
    p.add_argument("config", help="run config (YAML)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lr=1e-4 (repeatable)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="require resuming from the newest checkpoint")
    g.add_argument("--no-resume", action="store_true", help="start from scratch even if checkpoints exist")
    p.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train on N processes of this machine (torchrun; one per GPU on CUDA); "
        "needs train.parallel ddp or fsdp. See docs/distributed.md",
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("merge", help="merge an adapter into its base model (verified)")
    p.add_argument("run", help="run directory or adapter folder")
    p.add_argument("--out", required=True, help="output folder for the merged model")
    p.add_argument("--model", help="base model folder (default: the one named by the adapter)")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max |merged - adapter| logit difference")
    p.set_defaults(func=_cmd_merge)

    p = sub.add_parser("generate", help="generate replies to prompts (--prompt, or one per stdin line)")
    _add_sampling(p)
    p.add_argument("--prompt", action="append", help="user prompt (repeatable)")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("chat", help="interactive chat in the terminal")
    _add_sampling(p)
    p.set_defaults(func=_cmd_chat)

    from .cli_data import add_data_commands

    add_data_commands(sub)

    from .cli_model import add_model_commands

    add_model_commands(sub)

    from .cli_distill import add_distill_commands

    add_distill_commands(sub)

    from .cli_eval import add_eval_command

    add_eval_command(sub)

    from .cli_serve import add_serve_command

    add_serve_command(sub)

    from .cli_export import add_export_command

    add_export_command(sub)

    from .cli_server import add_server_commands

    add_server_commands(sub)

    from .cli_reward import add_reward_commands

    add_reward_commands(sub)

    from .cli_openai import add_openai_commands

    add_openai_commands(sub)

    p = sub.add_parser("config", help="print the default config with every key")
    p.set_defaults(func=_cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "config":
        from .run import quiet_third_party

        quiet_third_party()
    try:
        return args.func(args)
    except TunesmithError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
