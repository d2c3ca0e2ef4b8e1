"""User-facing text without the server's file-system paths.

A job's error and events are read by API clients, who must learn nothing about where the server
keeps its data (DESIGN principle 10 asks for which file and which line, not which folder).
Messages come from places that know paths (the training log's last error line, data-check and
reader errors about the staged copy ``runs/<job>/data/train.jsonl``, exceptions), so the worker
passes every error message through :func:`public_text` before storing it: known paths become
what the client knows them by (the training file's id, the model's name), and any other
absolute path becomes ``<server path>``.
"""

from __future__ import annotations

import re
from pathlib import Path

SERVER_PATH = "<server path>"

# An absolute POSIX path of two or more segments not glued to a word, a URL (``http://h/x``) or
# a relative path; it ends at white space, a quote or closing punctuation.
_ABS_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s/'\"`<>]+/)+[^\s'\"`<>,;:)\]]*")


def public_text(text: str, names: dict[str | Path, str]) -> str:
    """``text`` with each path in ``names`` (as given and resolved; longest first) replaced by
    its public name, then every other absolute path replaced by :data:`SERVER_PATH`."""
    pairs: dict[str, str] = {}
    for path, name in names.items():
        for form in {str(path), str(Path(path).resolve())}:
            if form not in ("", "/", "."):
                pairs[form] = name
    for form in sorted(pairs, key=len, reverse=True):
        text = text.replace(form, pairs[form])
    return _ABS_PATH.sub(SERVER_PATH, text)
