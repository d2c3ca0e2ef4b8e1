"""Command-line options that several commands define the same way, each defined once here."""

from __future__ import annotations


def add_config_arguments(p, example: str) -> None:
    """The run config positional and its repeatable ``--set KEY=VALUE`` overrides (``train``,
    ``estimate``); ``example`` is the override the help text shows."""
    p.add_argument("config", help="run config (YAML)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value, e.g. --set {example} (repeatable)",
    )


def add_listen_arguments(p) -> None:
    """``--host`` / ``--port``: where an HTTP server listens (``serve``, ``server``); local
    only unless a host is given."""
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="TCP port to listen on")


def add_sampling_arguments(p, *, max_new_tokens: int, seed_help: str | None = None) -> None:
    """``--max-new-tokens`` (default ``max_new_tokens``), ``--temperature`` (0: greedy),
    ``--top-p`` and ``--seed``: how replies are decoded (read back by :func:`sampling_options`)."""
    p.add_argument(
        "--max-new-tokens", type=int, default=max_new_tokens, help="most tokens generated per reply"
    )
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature; 0 = greedy")
    p.add_argument(
        "--top-p", type=float, default=1.0, help="nucleus sampling: keep the top-p probability mass"
    )
    p.add_argument("--seed", type=int, default=0, help=seed_help or "sampling seed (same seed, same replies)")


def sampling_options(args) -> dict:
    """The options of :func:`add_sampling_arguments` as the keywords of
    :func:`tunesmith.models.generate.generate` (and the commands built on it)."""
    return {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "seed": args.seed,
    }
