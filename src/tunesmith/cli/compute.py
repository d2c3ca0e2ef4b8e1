"""``--threads N`` for every command that computes, over the one thread-budget owner
:mod:`tunesmith.threads`.

The option takes effect while the command line is parsed — before any command imports torch — by
:func:`tunesmith.threads.use_threads`: OpenMP / MKL / OpenBLAS read the cap at start-up (and child
processes such as the llama.cpp quantiser inherit it), and torch, when already imported, is capped
with ``torch.set_num_threads``. Left out, the libraries' own default applies (a thread per core).
"""

from __future__ import annotations

import argparse


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of threads, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


class _UseThreads(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        from ..threads import use_threads

        use_threads(values)
        setattr(namespace, self.dest, values)


def add_threads_argument(parser, what: str = "compute") -> None:
    """Add ``--threads N`` (CPU threads of torch and the native libraries) to ``parser``."""
    parser.add_argument(
        "--threads",
        type=_positive,
        action=_UseThreads,
        metavar="N",
        help=f"CPU threads to {what} with (default: one per core); 1-2 is much faster for "
        "small models on a busy machine",
    )
