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


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, when it has one worth stating (not a flag's
    False, not an unset None or an empty list)."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        default = action.default
        stated = "%(default)" in text or "(default" in text  # already says it, its own way
        unset = default is None or default is argparse.SUPPRESS or isinstance(default, bool) or default == []
        if action.option_strings and not unset and not stated:
            text += " (default: %(default)s)"
        return text


def _format_all(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and all its sub-command parsers the :class:`HelpFormatter` (argparse does
    not pass a parser's formatter on to the parsers of its sub-commands)."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _format_all(child)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
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
    parser.add_argument("--version", action="version", version=f"tunesmith {__version__}")
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
    _format_all(parser)
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
