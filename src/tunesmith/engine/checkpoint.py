"""Atomic, self-checking checkpoints.

Layout of ``OUTPUT_DIR/checkpoints/step-000050/``: ``trainable.safetensors`` (the trainable
parameters by name), ``optim.pt`` (optimizer + scheduler state, loaded with
``weights_only=True``), ``rng.pt``, ``state.json`` and, written last, ``COMMITTED``. Everything is
written into a temporary sibling directory, fsynced, then renamed into place; a directory
without ``COMMITTED`` is never resumed.

Multi-process runs (engine.distributed) write the same format: rank 0 writes the gathered full
tensors and optimizer state, and ``rng.pt`` also holds every rank's RNG state under ``ranks``;
so a checkpoint resumes in one process or in many, with DDP or FSDP.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError

log = logging.getLogger("tunesmith")
MARKER = "COMMITTED"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(root: Path, step: int, *, trainable: dict[str, torch.Tensor], optim_state: dict,
                    rng: dict, state: dict, keep_last: int) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically and rotate old ones."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.contiguous().cpu() for k, v in trainable.items()}, tmp / "trainable.safetensors")
    torch.save(optim_state, tmp / "optim.pt")
    torch.save(rng, tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
    for f in tmp.iterdir():
        _fsync_file(f)
    (tmp / MARKER).write_text(str(step), encoding="utf-8")
    _fsync_file(tmp / MARKER)
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    _rotate(root, keep_last)
    return final


def _rotate(root: Path, keep_last: int) -> None:
    complete = list_checkpoints(root)
    for old in complete[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints (with the commit marker), oldest first; warns about incomplete ones."""
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.glob("step-*")):
        if (d / MARKER).is_file():
            out.append(d)
        else:
            log.warning("skipping incomplete checkpoint %s (no %s marker)", d, MARKER)
    return out


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def load_checkpoint(path: Path) -> dict:
    """Read a complete checkpoint: {'trainable', 'optim', 'rng', 'state'}; CheckpointError if damaged."""
    if not (path / MARKER).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {MARKER} marker)")
    try:
        return {
            "trainable": load_file(path / "trainable.safetensors"),
            "optim": torch.load(path / "optim.pt", weights_only=True, map_location="cpu"),
            "rng": torch.load(path / "rng.pt", weights_only=True, map_location="cpu"),
            "state": json.loads((path / "state.json").read_text(encoding="utf-8")),
        }
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable: {exc}") from None


def restore_trainable(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Copy saved trainable tensors into the model's parameters, checking names and shapes."""
    from torch.distributed.tensor import DTensor

    from .distributed import shard_like

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {source} does not match this model/adapter: "
                              f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        for name, p in params.items():
            t = tensors[name]
            if t.shape != p.shape:
                raise CheckpointError(f"checkpoint {source}: '{name}' has shape {tuple(t.shape)}, "
                                      f"the model expects {tuple(p.shape)}")
            if isinstance(p, DTensor):
                p.copy_(shard_like(t, p))  # this rank's shard of an FSDP parameter
            else:
                p.copy_(t.to(p.device, p.dtype))
