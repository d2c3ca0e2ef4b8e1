"""Writing a file so that a reader sees the old content or the new, never a torn one. Torch-free."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from os import PathLike
from pathlib import Path


def write_atomically(path: str | PathLike[str], chunks: Iterable[str]) -> None:
    """Write ``chunks`` (UTF-8) to a temporary file beside ``path``, then rename it over
    ``path``. On any error the temporary file is removed and ``path`` is left untouched.
    Missing parent directories are created."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            for chunk in chunks:
                handle.write(chunk)
        # mkstemp creates the file 0600; give it the mode a plain open() would have.
        os.chmod(handle.name, _new_file_mode(target))
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def _new_file_mode(target: Path) -> int:
    """The existing file's permissions, else 0666 minus the process umask."""
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
