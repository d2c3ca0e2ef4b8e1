"""Where the Tinker-compatible API keeps training runs and checkpoints, and what ``tinker://``
paths mean.

Layout under ``root`` (the server's ``<data>/tinker``)::

    <owner>/<run_id>/run.json                       the run: base model, LoRA config, metadata
    <owner>/<run_id>/weights/<name>/                a training checkpoint (save_weights)
    <owner>/<run_id>/sampler_weights/<name>/        a sampler checkpoint (save_weights_for_sampler)

Every checkpoint folder is an ordinary PEFT adapter (``adapter_config.json`` +
``adapter_model.safetensors``) — ``tunesmith serve --adapter``, ``tunesmith export`` and the
jobs service read it as they read any adapter — plus ``checkpoint.json`` (time, expiry, user
metadata) and, for training checkpoints, the Adam state (``optimizer.safetensors``).

A checkpoint's address is ``tinker://<run_id>/weights/<name>`` (or ``sampler_weights``), as the
SDK's ``ParsedCheckpointTinkerPath`` reads it. Paths resolve only within the caller's own
``owner`` folder: another owner's run answers exactly like a missing one
(:class:`CheckpointNotFound`). Run ids and names are checked against a strict pattern before
they touch the file system (no ``..``, no separators), so no client string is ever a path.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import DataError, TunesmithError
from ..files import write_atomically

KINDS = {"weights": "training", "sampler_weights": "sampler"}
"""Path segment -> the SDK's ``checkpoint_type``."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
"""Run ids (the SDK's model ids look like ``<session>:train:<n>``) and checkpoint names."""


class CheckpointNotFound(TunesmithError):
    """No such run or checkpoint for this owner (or not theirs): answer 404."""


@dataclass(frozen=True)
class TinkerPath:
    run_id: str
    segment: str  # "weights" | "sampler_weights"
    name: str

    @property
    def checkpoint_id(self) -> str:
        return f"{self.segment}/{self.name}"

    def __str__(self) -> str:
        return f"tinker://{self.run_id}/{self.segment}/{self.name}"


def check_name(name: str, what: str) -> str:
    """``name`` when it is a safe file name (letters, digits, ``._-``, at most 128); DataError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise DataError(
            f"{what} {name!r}: use 1-128 letters, digits, '.', ':', '_' or '-', starting with a letter or digit"
        )
    return name


def parse_path(path: str) -> TinkerPath:
    """``tinker://<run_id>/<weights|sampler_weights>/<name>`` -> :class:`TinkerPath`; DataError."""
    if not isinstance(path, str) or not path.startswith("tinker://"):
        raise DataError(f"path {path!r}: expected tinker://<run_id>/weights/<name>")
    parts = path[len("tinker://") :].split("/")
    if len(parts) != 3 or parts[1] not in KINDS:
        raise DataError(
            f"path {path!r}: expected tinker://<run_id>/weights/<name> or …/sampler_weights/<name>"
        )
    return TinkerPath(check_name(parts[0], "run id"), parts[1], check_name(parts[2], "checkpoint name"))


def _now() -> float:
    return time.time()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


class CheckpointStore:
    """Runs and checkpoints on disk (module docstring). Thread-safe for distinct checkpoints;
    the host serialises writes of one run through its request queue."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    # ---- runs -------------------------------------------------------------------------------
    def _owner_dir(self, owner: str) -> Path:
        return self.root / check_name(owner, "owner")

    def run_dir(self, owner: str, run_id: str) -> Path:
        return self._owner_dir(owner) / check_name(run_id, "run id")

    def write_run(self, owner: str, run_id: str, meta: dict) -> None:
        folder = self.run_dir(owner, run_id)
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(folder / "run.json", [json.dumps(meta, indent=1, sort_keys=True)])

    def read_run(self, owner: str, run_id: str) -> dict:
        try:
            folder = self.run_dir(owner, run_id)
        except DataError:
            raise CheckpointNotFound(f"no training run {run_id!r}") from None
        try:
            return json.loads((folder / "run.json").read_text())
        except (OSError, ValueError):
            raise CheckpointNotFound(f"no training run {run_id!r}") from None

    def list_runs(self, owner: str) -> list[str]:
        folder = self._owner_dir(owner)
        if not folder.is_dir():
            return []
        runs = [p for p in folder.iterdir() if (p / "run.json").is_file()]
        return [p.name for p in sorted(runs, key=lambda p: (p / "run.json").stat().st_mtime, reverse=True)]

    # ---- checkpoints ------------------------------------------------------------------------
    def folder(self, owner: str, tp: TinkerPath) -> Path:
        """The checkpoint's folder (it may not exist yet)."""
        return self.run_dir(owner, tp.run_id) / tp.segment / tp.name

    def new_checkpoint(self, owner: str, tp: TinkerPath, *, overwrite: bool) -> Path:
        """An empty staging folder for ``tp``; :meth:`commit` moves it into place. DataError if
        the checkpoint exists and ``overwrite`` is false."""
        self.read_run(owner, tp.run_id)
        final = self.folder(owner, tp)
        if self._alive(final) and not overwrite:
            raise DataError(f"checkpoint {tp} already exists (pass overwrite=True to replace it)")
        stage = final.parent / f".{tp.name}.incoming"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        return stage

    def commit(
        self, stage: Path, owner: str, tp: TinkerPath, *, ttl_seconds: int | None, user_metadata
    ) -> dict:
        """Write ``checkpoint.json`` into ``stage`` and move it to ``tp``'s place (replacing an
        old one); the checkpoint's description (:meth:`describe`)."""
        created = _now()
        meta = {
            "created": created,
            "expires": None if ttl_seconds is None else created + int(ttl_seconds),
            "user_metadata": dict(user_metadata or {}),
        }
        write_atomically(stage / "checkpoint.json", [json.dumps(meta, indent=1, sort_keys=True)])
        final = self.folder(owner, tp)
        old = final.parent / f".{tp.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        stage.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        return self.describe(owner, tp)

    def _alive(self, folder: Path) -> bool:
        """Whether a committed, unexpired checkpoint is there (an expired one is deleted now)."""
        try:
            meta = json.loads((folder / "checkpoint.json").read_text())
        except (OSError, ValueError):
            return False
        if meta.get("expires") is not None and meta["expires"] <= _now():
            shutil.rmtree(folder, ignore_errors=True)
            return False
        return True

    def resolve(self, owner: str, path: str | TinkerPath) -> tuple[TinkerPath, Path]:
        """(parsed path, folder) of an existing checkpoint of ``owner``; CheckpointNotFound
        (unknown, expired, or another owner's) or DataError (malformed path)."""
        tp = path if isinstance(path, TinkerPath) else parse_path(path)
        folder = self.folder(owner, tp)
        if not self._alive(folder):
            raise CheckpointNotFound(f"no checkpoint {tp}")
        return tp, folder

    def describe(self, owner: str, tp: TinkerPath) -> dict:
        """The SDK's ``Checkpoint`` object (JSON) of an existing checkpoint."""
        folder = self.folder(owner, tp)
        meta = json.loads((folder / "checkpoint.json").read_text())
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        return {
            "checkpoint_id": tp.checkpoint_id,
            "checkpoint_type": KINDS[tp.segment],
            "time": iso(meta["created"]),
            "tinker_path": str(tp),
            "size_bytes": size,
            "public": False,
            "user_metadata": meta.get("user_metadata") or None,
            "expires_at": None if meta.get("expires") is None else iso(meta["expires"]),
        }

    def list_checkpoints(self, owner: str, run_id: str) -> list[dict]:
        """The run's live checkpoints, oldest first; CheckpointNotFound for an unknown run."""
        self.read_run(owner, run_id)
        out = []
        for segment in KINDS:
            base = self.run_dir(owner, run_id) / segment
            if not base.is_dir():
                continue
            for folder in base.iterdir():
                if folder.name.startswith(".") or not self._alive(folder):
                    continue
                out.append(self.describe(owner, TinkerPath(run_id, segment, folder.name)))
        return sorted(out, key=lambda c: c["time"])

    def find(self, owner: str, run_id: str, checkpoint_id: str) -> Path:
        """The folder of ``owner``'s checkpoint ``<segment>/<name>`` of run ``run_id`` (the REST
        routes' address); CheckpointNotFound for a malformed address too (it names no checkpoint)."""
        segment, _, name = checkpoint_id.partition("/")
        if segment not in KINDS:
            raise CheckpointNotFound(f"no checkpoint {checkpoint_id!r}")
        try:
            tp = TinkerPath(check_name(run_id, "run id"), segment, check_name(name, "checkpoint name"))
        except DataError:
            raise CheckpointNotFound(f"no checkpoint {checkpoint_id!r}") from None
        return self.resolve(owner, tp)[1]

    def delete(self, owner: str, run_id: str, checkpoint_id: str) -> None:
        shutil.rmtree(self.find(owner, run_id, checkpoint_id))

    def set_ttl(self, owner: str, run_id: str, checkpoint_id: str, ttl_seconds: int | None) -> None:
        segment, _, name = checkpoint_id.partition("/")
        if segment not in KINDS:
            raise CheckpointNotFound(f"no checkpoint {checkpoint_id!r}")
        _, folder = self.resolve(
            owner, TinkerPath(check_name(run_id, "run id"), segment, check_name(name, "name"))
        )
        meta = json.loads((folder / "checkpoint.json").read_text())
        meta["expires"] = None if ttl_seconds is None else _now() + int(ttl_seconds)
        write_atomically(folder / "checkpoint.json", [json.dumps(meta, indent=1, sort_keys=True)])
