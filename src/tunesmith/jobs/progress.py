"""What a running job publishes: new rows of its run's ``metrics.jsonl`` followed as they are
written (:class:`RunTail`), turned into OpenAI's ``metrics`` events, checkpoint metrics and
results-file rows by a progress format — :class:`SftProgress` for supervised and DPO jobs,
:class:`.rft_worker.Progress` for reinforcement jobs (both have the same methods).

``metrics.jsonl`` is read incrementally here, from a byte offset, because the worker publishes
each step once while training appends; :meth:`tunesmith.rundir.RunDir.read_metrics` reads a
finished file whole.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import rundir

RESULTS_HEADER = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]


class SftProgress:
    """What a supervised or DPO job publishes per step: OpenAI's ``Step i/N: training loss=…``
    event, checkpoint metrics and results-file row. (:class:`.rft_worker.Progress` is the
    reinforcement counterpart; both have these methods.)"""

    results_header = RESULTS_HEADER

    def event(self, row: dict, total: int | None) -> tuple[str, dict]:
        return step_message(row, total), _event_data(row, total)

    def checkpoint(self, row: dict) -> dict:
        return _checkpoint_metrics(row)

    def results_row(self, row: dict) -> list:
        return [
            row["step"],
            row["loss"],
            row.get("accuracy", ""),
            row.get("eval_loss", ""),
            row.get("eval_accuracy", ""),
        ]

    def baseline(self, row: dict) -> None:
        return None  # the step-0 evaluation of an SFT run is not an OpenAI event


def progress_for(job: dict):
    """The progress format of ``job``: :class:`.rft_worker.Progress` for reinforcement jobs, else
    :class:`SftProgress`."""
    if job["method"]["type"] == "reinforcement":
        from .rft_worker import Progress

        return Progress(job)
    return SftProgress()


class RunTail:
    """Follows a run folder: new rows of ``metrics.jsonl``, total steps, committed checkpoints.

    A resumed run rewrites ``metrics.jsonl`` up to its checkpoint and replays later steps;
    rows at or below ``last_step`` were already published and are only re-read (the replayed
    values are identical: resume is exact). The evaluation before the first step (a row without
    ``loss`` at step 0) is offered once, by :meth:`take_baseline`, while no step is published."""

    def __init__(self, run: Path, job: dict, progress=None):
        self.run, self.job = run, job
        self.progress = progress or SftProgress()
        self._baseline: tuple[str, dict] | None = None
        self.metrics = rundir.RunDir(run).metrics
        self.offset = 0
        self.last_step = int(job["last_step"] or 0)
        self.total_steps = job["total_steps"]
        self.rows: dict[int, dict] = {}
        self.recorded: set[int] = set()
        self.damaged: set[tuple[int, int]] = set()  # (step, inode) that failed verification
        self.on_disk: set[int] = set()
        self._inode = None

    def read_total(self) -> None:
        try:
            self.total_steps = int(rundir.RunDir(self.run).read_run_info()["total_steps"])
        except (OSError, ValueError, KeyError):
            pass

    def read_rows(self) -> list[dict]:
        """Rows with a training loss for steps after ``last_step``, in step order."""
        try:
            st = self.metrics.stat()
        except FileNotFoundError:
            return []
        if st.st_ino != self._inode or st.st_size < self.offset:
            self._inode, self.offset = st.st_ino, 0  # replaced by a resumed run (MetricsFile)
        with open(self.metrics, "rb") as f:
            if self.offset:
                # Defence in depth against a file rewritten in place: our offset must still
                # sit just after a line end, else start over (published rows are not repeated).
                f.seek(self.offset - 1)
                if f.read(1) != b"\n":
                    self.offset = 0
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1  # only complete lines
        self.offset += end
        new = []
        for line in chunk[:end].splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if "loss" not in row:  # the eval_at_start baseline (step 0)
                if row.get("step") == 0 and self.last_step == 0:
                    self._baseline = self.progress.baseline(row)
                continue
            self.rows[row["step"]] = row
            if row["step"] > self.last_step:
                new.append(row)
                self.last_step = row["step"]
        return new

    def take_baseline(self) -> tuple[str, dict] | None:
        """The baseline evaluation's event ``(message, data)``, once; None otherwise."""
        found, self._baseline = self._baseline, None
        return found

    def new_checkpoints(self) -> list[int]:
        """Steps of committed checkpoints not published yet that verify against their manifest
        (the rule resume follows: a damaged one is never offered as a model). Each directory is
        hashed once; a damaged one is remembered by inode, so a rewrite of that step (a new
        directory) is looked at afresh."""
        from ..engine.checkpoint import list_checkpoints, verify_checkpoint

        found = {rundir.step_of(d): d for d in list_checkpoints(rundir.RunDir(self.run).checkpoints)}
        self.on_disk = set(found)
        fresh = []
        for step in sorted(set(found) - self.recorded):
            if step not in self.rows:
                continue
            key = (step, found[step].stat().st_ino)
            if key in self.damaged:
                continue
            if verify_checkpoint(found[step]) is None:
                fresh.append(step)
            else:
                self.damaged.add(key)
        self.recorded |= set(fresh)
        return fresh


def _fmt(x: float) -> str:
    return f"{x:.2f}" if abs(x) >= 0.01 else f"{x:.4g}"


def step_message(row: dict, total: int | None) -> str:
    """OpenAI's text, e.g. ``Step 30/30: training loss=0.03, validation loss=0.12, full validation
    loss=0.12``: the validation parts on steps that evaluated (the whole validation file is
    scored, so the full validation loss is the validation loss)."""
    text = f"Step {row['step']}/{total or '?'}: training loss={_fmt(row['loss'])}"
    if "eval_loss" in row:
        text += f", validation loss={_fmt(row['eval_loss'])}, full validation loss={_fmt(row['eval_loss'])}"
    return text


def _event_data(row: dict, total: int | None) -> dict:
    data = {
        "step": row["step"],
        "train_loss": row["loss"],
        "total_steps": total,
        "train_mean_token_accuracy": row.get("accuracy"),
    }
    if "eval_loss" in row:
        data.update(
            valid_loss=row["eval_loss"],
            valid_mean_token_accuracy=row.get("eval_accuracy"),
            full_valid_loss=row["eval_loss"],
            full_valid_mean_token_accuracy=row.get("eval_accuracy"),
        )
    return data


def _checkpoint_metrics(row: dict) -> dict:
    """OpenAI's checkpoint metrics; the whole validation file is scored at each evaluation, so
    ``full_valid_*`` equal ``valid_*``."""
    return {
        "step": row["step"],
        "train_loss": row.get("loss"),
        "train_mean_token_accuracy": row.get("accuracy"),
        "valid_loss": row.get("eval_loss"),
        "valid_mean_token_accuracy": row.get("eval_accuracy"),
        "full_valid_loss": row.get("eval_loss"),
        "full_valid_mean_token_accuracy": row.get("eval_accuracy"),
    }
