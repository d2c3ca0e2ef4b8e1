"""Writing a file so that a reader sees the old content or the new, never a torn one; where
tunesmith's cache lives. Torch-free."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from os import PathLike
from pathlib import Path


def cache_root() -> Path:
    """The tunesmith cache folder (``$TUNESMITH_CACHE_DIR``, else the user's cache directory)."""
    env = os.environ.get("TUNESMITH_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tunesmith"


def write_atomically(
    path: str | PathLike[str], chunks: Iterable[str] | Iterable[bytes], *, binary: bool = False
) -> None:
    """Write ``chunks`` (UTF-8 text, or bytes when ``binary``) to a temporary file beside
    ``path``, then rename it over ``path``. On any error the temporary file is removed and
    ``path`` is left untouched. Missing parent directories are created."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        "wb" if binary else "w",
        encoding=None if binary else "utf-8",
        dir=target.parent,
        prefix=f".{target.name}.",
        suffix=".tmp",
        delete=False,
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
