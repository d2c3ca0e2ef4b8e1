"""``tunesmith data show``: examples as the model sees them, with the trained tokens marked.

The text is the real chat-template rendering (:class:`Renderer`), split into runs of tokens
with the same loss-mask value; trained runs are shown in green on a terminal, or between
``[[`` and ``]]`` otherwise. That makes a masking mistake (a trained system prompt, an
untrained end-of-turn token) visible at a glance.
"""

from __future__ import annotations

from collections.abc import Iterator
from os import PathLike
from typing import Any

from ...errors import DataError
from .. import formats as F
from ..render import Rendered, Renderer

TRAINED_ANSI, UNTRAINED_ANSI, RESET_ANSI = "\x1b[1;32m", "\x1b[2m", "\x1b[0m"


def mask_runs(rendered: Rendered, tokenizer: Any) -> list[tuple[bool, str]]:
    """``[(trained, text), ...]``: maximal runs of tokens with equal mask value, decoded.

    Token 0 is never a target (nothing predicts it), so it is shown untrained whatever its mask.
    """
    mask = [0] + list(rendered.loss_mask[1:])
    runs: list[tuple[bool, str]] = []
    start = 0
    for i in range(1, len(mask) + 1):
        if i == len(mask) or mask[i] != mask[start]:
            text = tokenizer.decode(
                rendered.input_ids[start:i], skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
            runs.append((bool(mask[start]), text))
            start = i
    return runs


def format_runs(runs: list[tuple[bool, str]], *, color: bool) -> str:
    """Join runs; trained ones in ANSI green (``color``) or wrapped in ``[[...]]``."""
    if color:
        return "".join(
            (TRAINED_ANSI if trained else UNTRAINED_ANSI) + text + RESET_ANSI for trained, text in runs
        )
    return "".join(f"[[{text}]]" if trained else text for trained, text in runs)


def iter_rendered(
    path: str | PathLike[str], tokenizer: Any, n: int = 3, max_length: int = 2**31 - 1
) -> Iterator[tuple[int, Rendered]]:
    """``(line, rendered)`` for the first ``n`` examples of an SFT-style file, in file order.

    Raises :class:`DataError` for a malformed row (as training would) or a file that is not
    SFT data (preference, KTO and prompt-only files have no single target sequence).
    """
    renderer = Renderer(tokenizer, max_length=max_length)
    shown = 0
    for line, fmt, row in F.iter_format_rows(path):
        if shown >= n:
            return
        if fmt not in (F.OPENAI_CHAT, F.SHAREGPT, F.ALPACA, F.PROMPT_COMPLETION, F.TEXT):
            raise DataError(
                f"data show renders SFT examples; this is {F.FORMAT_LABELS[fmt]} data",
                path=str(path),
                line=line,
            )
        yield line, renderer(F.to_example(row, fmt, str(path), line))
        shown += 1


def show_examples(path: str | PathLike[str], tokenizer: Any, n: int = 3, *, color: bool = False) -> str:
    """The text ``tunesmith data show`` prints: a header line and the marked rendering per example."""
    parts = []
    for line, rendered in iter_rendered(path, tokenizer, n):
        header = f"── line {line}: {len(rendered.input_ids)} tokens, {rendered.n_targets} trained ──"
        runs = mask_runs(rendered, tokenizer)
        if runs:  # the template's final newline would leave a blank line between examples
            runs[-1] = (runs[-1][0], runs[-1][1].rstrip("\n"))
        parts.append(header + "\n" + format_runs(runs, color=color))
    return "\n\n".join(parts) + ("\n" if parts else "")
