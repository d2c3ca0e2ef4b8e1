"""The teacher's top-k log-probabilities, computed once and kept on disk (``distill.cache_top_k``).

For every supervised position of every rendered item the teacher's ``k`` most likely next tokens
and their log-probabilities at temperature ``T`` are stored; training then needs no teacher at
all (the divergence runs over those k tokens plus a tail bucket, see
:mod:`tunesmith.losses.distill`), so teacher and student are never in memory together.

File: ``<cache_dir>/topk-<key>.safetensors`` with tensors ``ids [N, k] int32``,
``logp [N, k] float32`` and ``offsets [items + 1] int64`` (item j owns rows
``offsets[j]:offsets[j+1]``, in the order :func:`tunesmith.data.collate.collate` lists its
targets). ``key`` hashes the teacher's fingerprint, the rendered token ids and loss masks, k, T
and the vocabulary size, so a changed teacher, tokenizer, template, max_length or data gets a
new file, and runs sharing ``cache_dir`` reuse each other's. Size: ``8 · k`` bytes per
supervised token (k = 32: 256 bytes; 1M supervised tokens: 256 MB).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from array import array
from collections.abc import Callable
from pathlib import Path

import torch

from ..data.collate import collate
from ..engine.loop import split_by_tokens
from ..errors import CheckpointError
from ..losses.distill import tempered_log_probs
from ..models.forward import head_logits
from .distill_teacher import teacher_hidden

log = logging.getLogger("tunesmith")

FORMAT = "tunesmith-distill-topk-1"


def items_digest(items: list) -> str:
    """Hash of the rendered token ids and loss masks of ``items`` (what the teacher scores)."""
    h = hashlib.sha256()
    for item in items:
        h.update(len(item.input_ids).to_bytes(4, "little"))
        h.update(array("i", item.input_ids).tobytes())
        h.update(bytes(item.loss_mask))
    return h.hexdigest()


def cache_key(teacher_fp: str, digest: str, k: int, temperature: float, vocab: int) -> str:
    text = f"{FORMAT}|{teacher_fp}|{digest}|k={k}|T={temperature!r}|V={vocab}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@torch.no_grad()
def compute_topk(
    teacher,
    items: list,
    *,
    k: int,
    temperature: float,
    vocab: int,
    max_tokens: int = 4096,
    chunk_size: int = 1024,
) -> dict[str, torch.Tensor]:
    """Score ``items`` with ``teacher``: ``{"ids", "logp", "offsets"}`` as stored on disk.

    Items are run in padding-free passes of at most ``max_tokens`` tokens; logits exist only for
    ``chunk_size`` supervised positions at a time (``[chunk_size, V]``), never ``[T, V]``.
    Only the first ``vocab`` logits count (the smaller of the two models' LM heads).
    """
    ids_out, logp_out = [], []
    offsets = [0]
    done, started, total = 0, time.perf_counter(), len(items)
    for group in split_by_tokens(items, max_tokens, lambda it: len(it.input_ids)):
        batch = collate(group)
        hidden = teacher_hidden(teacher, batch)
        for s in range(0, hidden.shape[0], chunk_size):
            logp = tempered_log_probs(
                head_logits(teacher, hidden[s : s + chunk_size])[:, :vocab], temperature
            )
            top, ids = torch.topk(logp, min(k, vocab), dim=-1)
            ids_out.append(ids.to("cpu", torch.int32))
            logp_out.append(top.cpu())
        for item in group:
            offsets.append(offsets[-1] + sum(item.loss_mask[1:]))
        done += len(group)
        if time.perf_counter() - started > 30 and done < total:
            log.info("distill cache: scored %d of %d items", done, total)
            started = time.perf_counter()
    if offsets[-1] != sum(x.shape[0] for x in ids_out):  # pragma: no cover - collate contract
        raise RuntimeError("distill cache: target count does not match the items' loss masks")
    return {
        "ids": torch.cat(ids_out) if ids_out else torch.zeros(0, k, dtype=torch.int32),
        "logp": torch.cat(logp_out) if logp_out else torch.zeros(0, k),
        "offsets": torch.tensor(offsets, dtype=torch.int64),
    }


def save_cache(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write atomically: a temporary file in the same folder, fsynced, then renamed."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": FORMAT, **metadata}
    )
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_cache(path: Path, key: str, n_items: int) -> dict[str, torch.Tensor]:
    """Read a cache file written by :func:`save_cache`; CheckpointError if it does not fit."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in ("ids", "logp", "offsets")}
    except Exception as exc:  # truncated / not safetensors
        raise CheckpointError(f"distill cache {path} is unreadable ({exc}); delete it to recompute") from None
    if meta.get("format") != FORMAT or meta.get("key") != key or tensors["offsets"].numel() != n_items + 1:
        raise CheckpointError(
            f"distill cache {path} does not belong to this teacher and data; delete it to recompute"
        )
    return tensors


def per_item(tensors: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Split the stored rows into one ``(ids [n_j, k], logp [n_j, k])`` view per item."""
    off = tensors["offsets"].tolist()
    return [(tensors["ids"][a:b], tensors["logp"][a:b]) for a, b in zip(off[:-1], off[1:])]


def cached_topk(
    items: list,
    *,
    cache_dir: Path,
    teacher_fp: str,
    k: int,
    temperature: float,
    vocab: int,
    get_teacher: Callable[[], torch.nn.Module],
    max_tokens: int = 4096,
    chunk_size: int = 1024,
    label: str = "train",
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-item teacher top-k for ``items``: from ``cache_dir`` when present, else computed with
    ``get_teacher()`` (called only then, so a warm cache never loads the teacher) and saved."""
    if not items:
        return []
    key = cache_key(teacher_fp, items_digest(items), k, temperature, vocab)
    path = Path(cache_dir) / f"topk-{key}.safetensors"
    if path.is_file():
        log.info("distill cache: %s data (%d items) from %s", label, len(items), path)
        return per_item(load_cache(path, key, len(items)))
    t0 = time.perf_counter()
    tensors = compute_topk(
        get_teacher(),
        items,
        k=k,
        temperature=temperature,
        vocab=vocab,
        max_tokens=max_tokens,
        chunk_size=chunk_size,
    )
    save_cache(
        path,
        tensors,
        {
            "key": key,
            "k": str(k),
            "temperature": repr(temperature),
            "vocab": str(vocab),
            "teacher_fingerprint": teacher_fp,
        },
    )
    log.info(
        "distill cache: scored %s data (%d items, %d positions, top-%d) in %.1fs -> %s",
        label,
        len(items),
        tensors["ids"].shape[0],
        k,
        time.perf_counter() - t0,
        path,
    )
    return per_item(tensors)
