"""The one writer of metric rows (metrics.jsonl, and the experiment trackers) and the progress display."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from ..progress import use_bar

log = logging.getLogger("tunesmith")


def _whole_rows(path: Path) -> list[str]:
    """The lines of ``path`` that are whole JSON objects. A run killed mid-write leaves its last
    line cut off; that row is replayed after the resume anyway, so it is dropped (with a note)
    rather than stopping the resume."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            if isinstance(json.loads(line), dict):
                rows.append(line)
                continue
        except ValueError:
            pass
        log.warning("%s, line %d: not a whole metrics row (cut off by a kill?); dropped", path, number)
    return rows


class MetricsFile:
    """Appends one JSON object per optimizer step (and per evaluation) to ``metrics.jsonl``
    and hands the same row to ``trackers`` (:class:`tunesmith.engine.trackers.Trackers`, owned
    and closed by the caller: it outlives training to store the report and final/)."""

    def __init__(self, path: Path, resume_step: int | None, trackers=None):
        self.path = path
        self.trackers = trackers
        if resume_step is not None and path.exists():
            # Rows written after the checkpoint we resume from are replayed, so drop them.
            kept = [line for line in _whole_rows(path) if json.loads(line).get("step", 0) <= resume_step]
            # Replace the file rather than truncate it in place: a reader following it by byte
            # offset (the jobs worker) sees a new inode and starts over, instead of seeking into
            # the middle of a replayed row whose timing fields made it longer or shorter. A kill
            # during the rewrite also leaves the old file whole.
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            os.replace(tmp, path)
        elif path.exists():
            path.unlink()
        self._f = open(path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()
        if self.trackers:
            self.trackers.metrics(row)

    def close(self) -> None:
        self._f.close()


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """A live bar on a terminal (rich, when installed), plain log lines otherwise.

    ``signals``: the method's progress metrics (:class:`tunesmith.config.registry.Signal`), shown
    after the loss on every update (reward for GRPO, pair accuracy and margin for DPO …).
    :meth:`evaluating` says so while a held-out evaluation runs, so a bar standing at ``0/40``
    during the step-0 evaluation reads "evaluating" rather than looking stuck."""

    def __init__(self, total: int, start: int, mode: str, log_every: int, signals: tuple = ()):
        self.total, self.start, self.log_every = total, start, log_every
        self.signals = signals
        self.t0 = time.perf_counter()
        self._bar = None
        self.enabled = mode != "none"
        if use_bar(mode):  # the one "bar or lines" decision (tunesmith.progress)
            from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._task = self._bar.add_task("train", total=total, completed=start, info="")
            self._bar.start()

    def row_text(self, row: dict, prefix: str = "") -> str:
        """``loss 0.4120 | acc 0.750 | margin 0.310`` for a metrics row (``prefix`` "eval_" for
        an evaluation's keys); signals the row lacks are left out."""
        parts = [f"{prefix}loss {row[prefix + 'loss']:.4f}"] if prefix + "loss" in row else []
        for sig in self.signals:
            value = row.get(prefix + sig.key)
            if isinstance(value, (int, float)):
                parts.append(f"{prefix}{sig.short} {value:.3f}")
        return " | ".join(parts)

    def update(self, row: dict) -> None:
        step = row["step"]
        done = step - self.start
        eta = (time.perf_counter() - self.t0) / max(done, 1) * (self.total - step)
        info = f"{self.row_text(row)} | lr {row['lr']:.2e} | {row['tokens_per_s']:.0f} tok/s"
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info, description="train")
        elif self.enabled and (step % self.log_every == 0 or step == self.total):
            log.info("step %d/%d | %s | eta %s", step, self.total, info, _fmt_eta(eta))

    def evaluating(self, step: int, batches: int) -> None:
        """A held-out evaluation of ``batches`` batches starts after optimizer step ``step``."""
        text = f"evaluating the held-out set ({batches} batches)"
        if self._bar is not None:
            self._bar.update(self._task, description="eval", info=text)
        elif self.enabled:
            log.info("step %d: %s", step, text)

    def note(self, message: str) -> None:
        if self._bar is not None:
            self._bar.console.log(message)
        elif self.enabled:
            log.info(message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
