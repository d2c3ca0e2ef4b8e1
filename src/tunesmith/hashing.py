"""Content hashes of files, read in 1 MiB blocks so a large file never sits in memory whole."""

from __future__ import annotations

import hashlib
from pathlib import Path


def update_with_file(h, path: str | Path) -> None:
    """Feed the bytes of ``path`` to the hash object ``h`` (any ``hashlib`` hash)."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of the file's bytes."""
    h = hashlib.sha256()
    update_with_file(h, path)
    return h.hexdigest()
