"""The ``tunesmith`` command line: thin wrappers over the library, one module per command group.

``train``/``config`` (train.py), ``generate``/``chat`` (generate.py), ``data …`` (data.py),
``import``/``estimate`` (model.py), ``distill …`` (distill.py), ``eval`` (eval.py),
``export``/``merge`` (export.py), ``serve`` — the inference server (serve.py), ``server``/``worker``
— the fine-tuning service (server.py), ``reward …`` (reward.py), ``openai …`` (openai.py).
"""

from __future__ import annotations

import argparse
import sys

from ..errors import TunesmithError
from .train import _START  # noqa: F401  (imported first: the process start time train reports from)


def build_parser() -> argparse.ArgumentParser:
    from .data import add_data_commands
    from .distill import add_distill_commands
    from .eval import add_eval_command
    from .export import add_export_commands
    from .generate import add_generate_commands
    from .model import add_model_commands
    from .openai import add_openai_commands
    from .reward import add_reward_commands
    from .serve import add_serve_command
    from .server import add_server_commands
    from .train import add_train_commands

    parser = argparse.ArgumentParser(
        prog="tunesmith", description="Fine-tune open language models on your data."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        add_train_commands,
        add_generate_commands,
        add_data_commands,
        add_model_commands,
        add_distill_commands,
        add_eval_command,
        add_serve_command,
        add_export_commands,
        add_server_commands,
        add_reward_commands,
        add_openai_commands,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "config":
        from ..quiet import quiet_third_party

        quiet_third_party()
    try:
        return args.func(args)
    except TunesmithError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
