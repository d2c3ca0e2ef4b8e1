"""A cache of rendered SFT-style data, keyed by everything rendering depends on.

Rendering (chat template, tokenisation, loss masks; :mod:`.render`) gives the same token ids for
the same inputs every time, and costs about a second per 2,000 chats of every run's start-up. The
result of one run's rendering is kept under ``<cache>/render/<key>.npz`` (``<cache>`` is
:func:`tunesmith.files.cache_root`) and reused when every input is the same:

- the bytes of every data file the config names;
- the settings that decide rendering and the train / held-out split (the config's ``data``
  section, the method, the seed, ``max_length``, ``train_on_all_tokens``, the template's name);
- the tokenizer as loaded: its serialised vocabulary / normaliser / pre- and post-processor, its
  chat template and special tokens;
- the code: tunesmith's data-reading and rendering sources and the versions of transformers,
  tokenizers and jinja2 (which render the template).

A source that is not a plain file (a folder) turns the cache off for that run. An entry holds
flat integer arrays (read with ``allow_pickle=False``) and a JSON block; it is written atomically,
and a damaged or unreadable entry is ignored and rendered anew. The newest :data:`KEEP` entries
are kept. ``TUNESMITH_RENDER_CACHE=0`` turns the cache off.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ..files import cache_root, write_atomically
from ..hashing import update_with_file
from .render import Rendered

log = logging.getLogger("tunesmith")

KEEP = 16
"""Entries kept in the cache folder (the least recently used beyond these are deleted)."""
FORMAT = 1

RenderedSets = tuple[list[Rendered], list[Rendered], dict, dict]
"""(train, held-out, train stats, held-out stats), as ``methods.common.render_examples`` returns."""


def enabled() -> bool:
    return os.environ.get("TUNESMITH_RENDER_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def _code_fingerprint(h) -> None:
    """tunesmith's reading / rendering code and the libraries that render templates."""
    here = Path(__file__).resolve().parent
    package = here.parent
    sources = sorted(here.glob("*.py")) + [
        package / "models" / "template.py",
        package / "methods" / "common.py",
    ]
    for path in sources:
        h.update(path.name.encode())
        update_with_file(h, path)
    for dist in ("transformers", "tokenizers", "jinja2"):
        try:
            h.update(f"{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist}=-".encode())


def _tokenizer_fingerprint(h, tokenizer) -> None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError("not a fast tokenizer")
    h.update(backend.to_str().encode())
    h.update(json.dumps(getattr(tokenizer, "chat_template", None), sort_keys=True, default=str).encode())
    h.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())


def render_key(files: list[str], settings: dict[str, Any], tokenizer) -> str | None:
    """The cache key for rendering ``files`` with ``settings`` through ``tokenizer``; None when
    the cache is off, a source is not a plain file, or the tokenizer cannot be fingerprinted."""
    if not enabled() or not all(Path(f).is_file() for f in files):
        return None
    h = hashlib.sha256(f"tunesmith-render-{FORMAT}".encode())
    try:
        _tokenizer_fingerprint(h, tokenizer)
        _code_fingerprint(h)
        h.update(json.dumps(settings, sort_keys=True, default=str).encode())
        for f in files:
            h.update(b"\0file\0")
            update_with_file(h, f)
    except (OSError, TypeError):
        return None
    return h.hexdigest()


def cached_render(key: str | None, render: Callable[[], RenderedSets]) -> RenderedSets:
    """``render()``'s result, from the cache entry ``key`` when there is one (else rendered and
    stored). ``key`` None: always ``render()``."""
    if key is None:
        return render()
    path = cache_root() / "render" / f"{key}.npz"
    if path.is_file():
        try:
            result = _decode(path)
            os.utime(path)  # most recently used
            log.info("data: rendered examples read from the render cache (%s)", path)
            return result
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as exc:
            log.warning("render cache entry %s is unreadable (%s); rendering anew", path, exc)
    result = render()
    try:
        write_atomically(path, [_encode(result)], binary=True)
        _evict(path.parent)
    except OSError as exc:  # a read-only or full cache only costs the next run its rendering
        log.warning("could not write the render cache entry %s: %s", path, exc)
    return result


def _encode(result: RenderedSets) -> bytes:
    train, evals, stats, eval_stats = result
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"format": FORMAT, "stats": stats, "eval_stats": eval_stats}
    for name, items in (("train", train), ("eval", evals)):
        arrays[f"{name}_lengths"] = np.array([len(r.input_ids) for r in items], dtype=np.int64)
        arrays[f"{name}_ids"] = np.array([t for r in items for t in r.input_ids], dtype=np.int64)
        arrays[f"{name}_mask"] = np.array([m for r in items for m in r.loss_mask], dtype=np.uint8)
        arrays[f"{name}_truncated"] = np.array([r.truncated for r in items], dtype=np.bool_)
        meta[f"{name}_sources"] = [r.source for r in items]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _decode(path: Path) -> RenderedSets:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')}, expected {FORMAT}")
        sets = []
        for name in ("train", "eval"):
            lengths = z[f"{name}_lengths"].tolist()
            ids, mask = z[f"{name}_ids"].tolist(), z[f"{name}_mask"].tolist()
            truncated, sources = z[f"{name}_truncated"].tolist(), meta[f"{name}_sources"]
            if len(sources) != len(lengths) or sum(lengths) != len(ids) or len(ids) != len(mask):
                raise ValueError("inconsistent array sizes")
            items, at = [], 0
            for n, src, cut in zip(lengths, sources, truncated):
                items.append(Rendered(ids[at : at + n], mask[at : at + n], src, bool(cut)))
                at += n
            sets.append(items)
    return sets[0], sets[1], meta["stats"], meta["eval_stats"]


def _evict(folder: Path) -> None:
    entries = sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[KEEP:]:
        old.unlink(missing_ok=True)
