"""Atomic, self-checking checkpoints.

Layout of ``OUTPUT_DIR/checkpoints/step-000050/``: ``trainable.safetensors`` (the trainable
parameters by name), ``optim.pt`` (optimizer + scheduler state, loaded with
``weights_only=True``), ``rng.pt``, ``state.json`` and, written last, ``COMMITTED``. Everything is
written into a temporary sibling directory, fsynced, then renamed into place; a directory
without ``COMMITTED`` is never resumed.

``COMMITTED`` is a JSON manifest, ``{"step": N, "files": {name: {"bytes": n, "sha256": hex}}}``,
of every other file in the directory. A resume verifies it (:func:`verify_checkpoint`) and falls
back to the newest checkpoint that verifies and loads (:func:`load_newest_good`), so a file cut
short or damaged after the commit (a bad disk, an interrupted copy) costs the steps since the
previous checkpoint, not the run. Checkpoints written before the manifest existed hold the bare
step number in ``COMMITTED``; they still resume, checked for their files' presence and
loadability only (see :func:`verify_checkpoint`).

Multi-process runs (engine.distributed) write the same format: rank 0 writes the gathered full
tensors and optimizer state, and ``rng.pt`` also holds every rank's RNG state under ``ranks``;
so a checkpoint resumes in one process or in many, with DDP or FSDP.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file, save_file

from .. import rundir
from ..errors import CheckpointError
from ..hashing import sha256_file

log = logging.getLogger("tunesmith")
MARKER = rundir.MARKER
FILES = ("trainable.safetensors", "optim.pt", "rng.pt", "state.json")


class LoadedCheckpoint(NamedTuple):
    """A checkpoint chosen for resuming: its directory and :func:`load_checkpoint`'s dict."""

    path: Path
    data: dict


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    root: Path,
    step: int,
    *,
    trainable: dict[str, torch.Tensor],
    optim_state: dict,
    rng: dict,
    state: dict,
    keep_last: int,
    keep: int | None = None,
) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically and rotate old ones (:func:`_rotate`;
    checkpoint ``keep``, the best one of ``train.keep_best``, is kept whatever its age).

    The files are written and fsynced, then the manifest ``COMMITTED`` (their sizes and SHA-256,
    hashed from the files as written), then the directory is renamed into place."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / rundir.checkpoint_name(step)
    tmp = root / f".tmp-{rundir.checkpoint_name(step)}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.contiguous().cpu() for k, v in trainable.items()}, tmp / "trainable.safetensors")
    torch.save(optim_state, tmp / "optim.pt")
    torch.save(rng, tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
    for f in tmp.iterdir():
        _fsync_file(f)
    manifest = {
        "step": step,
        "files": {
            f.name: {"bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in sorted(tmp.iterdir())
        },
    }
    (tmp / MARKER).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    _fsync_file(tmp / MARKER)
    _fsync_dir(tmp)
    if final.exists():
        _remove(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    _rotate(root, step, keep_last, keep)
    return final


def _rotate(root: Path, step: int, keep_last: int, keep: int | None = None) -> None:
    """After writing checkpoint ``step``: keep the newest ``keep_last`` checkpoints up to it,
    and checkpoint ``keep`` (when given) besides them.

    Checkpoints of later steps are removed: the run is at ``step`` now and rewrites them, so
    they belong to an abandoned timeline — damaged ones a resume fell back past, or those of an
    earlier run started over with ``--no-resume`` — and must not be resumed after a crash, nor
    count towards ``keep_last`` (which could otherwise delete the checkpoint just written).
    Leftover ``.tmp-step-*`` / ``.old-step-*`` directories of a killed process go too (this
    process is the only writer, and its own were renamed or removed)."""
    for stale in [*root.glob(".tmp-" + rundir.CHECKPOINT_GLOB), *root.glob(".old-" + rundir.CHECKPOINT_GLOB)]:
        shutil.rmtree(stale, ignore_errors=True)
    older = []
    for d in list_checkpoints(root):
        if rundir.step_of(d) > step:
            log.info("removing checkpoint %s: the run restarted from an earlier step", d)
            _remove(d)
        elif rundir.step_of(d) != keep:
            older.append(d)
    for old in older[:-keep_last]:
        _remove(old)


def _remove(path: Path) -> None:
    """Delete checkpoint ``path`` as one step for readers: renamed out of ``step-*`` first, so
    a kill during the deletion never leaves a committed-looking directory with files missing."""
    gone = path.with_name(".old-" + path.name)
    shutil.rmtree(gone, ignore_errors=True)
    os.replace(path, gone)
    shutil.rmtree(gone, ignore_errors=True)


def list_checkpoints(root: Path) -> list[Path]:
    """Committed checkpoints (with the commit marker), oldest first; warns about incomplete ones.

    Cheap (no file is read): a committed checkpoint may still fail :func:`verify_checkpoint`."""
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.glob(rundir.CHECKPOINT_GLOB)):
        if rundir.step_of(d) is None:
            continue
        if (d / MARKER).is_file():
            out.append(d)
        else:
            log.warning("skipping incomplete checkpoint %s (no %s marker)", d, MARKER)
    return out


def latest_checkpoint(root: Path) -> Path | None:
    """The newest committed checkpoint, unverified (see :func:`latest_good_checkpoint`)."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def read_manifest(path: Path) -> dict | None:
    """The manifest of checkpoint ``path``; None for an old-format marker (the bare step
    number). CheckpointError when the marker is missing or unreadable."""
    try:
        value = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{MARKER} unreadable ({exc.__class__.__name__})") from None
    if isinstance(value, int) and not isinstance(value, bool):
        return None
    files = value.get("files") if isinstance(value, dict) else None
    if (
        not isinstance(files, dict)
        or not isinstance(value.get("step"), int)
        or not all(
            isinstance(f, dict)
            and isinstance(f.get("bytes"), int)
            and isinstance(f.get("sha256"), str)
            and name == Path(name).name
            and not name.startswith(".")  # files of this directory only
            for name, f in files.items()
        )
    ):
        raise CheckpointError(f"{MARKER} unreadable (not a checkpoint manifest)")
    return value


def verify_checkpoint(path: Path) -> str | None:
    """None when checkpoint ``path`` is intact, else the reason, naming the bad file:
    ``"optim.pt: 1024 bytes, COMMITTED says 2048"``, ``"… missing"``, ``"… content differs
    (sha256 …)"``, ``"COMMITTED unreadable …"``.

    Sizes are compared first (cheap), then every file is hashed. An old-format checkpoint
    (bare step number in ``COMMITTED``) is *unverified but committed*: only the presence of
    its files is checked here; whether they load is found out by :func:`load_checkpoint`."""
    try:
        manifest = read_manifest(path)
    except CheckpointError as exc:
        return str(exc)
    if manifest is None:
        missing = [name for name in FILES if not (path / name).is_file()]
        return f"{missing[0]} missing" if missing else None
    named_step = rundir.step_of(path)  # None for a copy under another name (its manifest still checks it)
    if named_step is not None and manifest["step"] != named_step:
        return f"{MARKER} is for step {manifest['step']}"
    files = manifest["files"]
    unlisted = [name for name in FILES if name not in files]
    if unlisted:
        return f"{unlisted[0]} not in {MARKER}"
    for name, want in files.items():
        if not (path / name).is_file():
            return f"{name} missing"
        size = (path / name).stat().st_size
        if size != want["bytes"]:
            return f"{name}: {size} bytes, {MARKER} says {want['bytes']}"
    for name, want in files.items():
        got = sha256_file(path / name)
        if got != want["sha256"]:
            return (
                f"{name}: content differs from {MARKER} (sha256 {got[:12]}…, expected {want['sha256'][:12]}…)"
            )
    return None


def good_checkpoints(root: Path) -> Iterator[Path]:
    """Committed checkpoints that verify, newest first, each verified only when the caller asks
    for it (so the usual resume hashes one checkpoint); warns, naming the bad file, about each
    one skipped."""
    for path in reversed(list_checkpoints(root)):
        reason = verify_checkpoint(path)
        if reason is None:
            yield path
        else:
            log.warning("skipping damaged checkpoint %s: %s", path, reason)


def latest_good_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint that verifies; None when none is committed; CheckpointError (one
    line) when some are committed but none verifies."""
    for path in good_checkpoints(root):
        return path
    _raise_if_committed(root)
    return None


def load_newest_good(root: Path) -> LoadedCheckpoint | None:
    """The resume rule: the newest checkpoint under ``root`` that verifies *and* loads, with a
    warning for each one skipped; None when none is committed; CheckpointError (one line) when
    some are committed but none is usable. A checkpoint's contents that do not fit the run
    (other settings, other model) are the caller's check, and no reason to fall back."""
    for path in good_checkpoints(root):
        try:
            return LoadedCheckpoint(path, load_checkpoint(path))
        except CheckpointError as exc:
            log.warning("skipping damaged checkpoint %s: %s", path, exc)
    _raise_if_committed(root)
    return None


def _raise_if_committed(root: Path) -> None:
    found = list_checkpoints(root)
    if found:
        names = ", ".join(d.name for d in found)
        raise CheckpointError(
            f"no usable checkpoint in {root}: every committed one ({names}) is damaged "
            "(the warnings above name the bad files); move them away, or rerun with "
            "--no-resume to start over"
        )


def load_checkpoint(path: Path) -> dict:
    """Read a committed checkpoint: {'trainable', 'optim', 'rng', 'state'}; CheckpointError,
    naming the file, if one is missing or does not load. Does not check the manifest (that is
    :func:`verify_checkpoint`)."""
    if not (path / MARKER).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {MARKER} marker)")
    readers = {
        "trainable": ("trainable.safetensors", load_file),
        "optim": ("optim.pt", _torch_load),
        "rng": ("rng.pt", _torch_load),
        "state": ("state.json", lambda f: json.loads(f.read_text(encoding="utf-8"))),
    }
    out = {}
    for key, (name, read) in readers.items():
        try:
            out[key] = read(path / name)
        except Exception as exc:
            raise CheckpointError(
                f"checkpoint {path}: {name} is corrupt or unreadable: {_one_line(exc)}"
            ) from None
    return out


def _torch_load(file: Path):
    return torch.load(file, weights_only=True, map_location="cpu")


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:200] + "…"


def restore_trainable(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Copy saved trainable tensors into the model's parameters, checking names and shapes."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    copy_checked(params, tensors, f"checkpoint {source}", CheckpointError)


def copy_checked(
    params: dict[str, torch.nn.Parameter],
    tensors: dict[str, torch.Tensor],
    where: str,
    error: type[Exception],
) -> None:
    """Copy ``tensors`` into ``params`` (the same names, each the same shape; cast to the
    parameter's device and dtype; an FSDP parameter takes this rank's shard), else ``error``
    naming ``where`` and the first differences. Nothing is copied when the names differ."""
    from torch.distributed.tensor import DTensor

    from .distributed import shard_like

    missing = sorted(set(params) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise error(
            f"{where} does not match this model/adapter: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    with torch.no_grad():
        for name, p in params.items():
            t = tensors[name]
            if t.shape != p.shape:
                raise error(
                    f"{where}: '{name}' has shape {tuple(t.shape)}, the model expects {tuple(p.shape)}"
                )
            if isinstance(p, DTensor):
                p.copy_(shard_like(t, p))  # this rank's shard of an FSDP parameter
            else:
                p.copy_(t.to(p.device, p.dtype))
