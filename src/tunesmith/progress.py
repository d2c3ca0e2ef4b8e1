"""Progress of steps that take more than a few seconds: a live rich bar on a terminal, plain log
lines otherwise (a log file, CI, a worker's captured output).

The one owner of that choice: the training loop's bar (:class:`tunesmith.engine.metrics.Progress`)
and every other long step — generation over an eval set, ``distill generate``, GGUF import and
export, merging, ``data check`` — decide "bar or lines" with :func:`use_bar` and show a task
with :class:`TaskProgress`. ``rich`` is optional (the ``rich`` extra); without it a terminal gets
the plain lines too. Torch-free, importable from every layer.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

log = logging.getLogger("tunesmith")

MODES = ("auto", "bar", "lines", "none")


def use_bar(mode: str = "auto") -> bool:
    """Whether ``mode`` ("auto": when stderr is a terminal) asks for a live bar and rich is there."""
    if mode not in ("auto", "bar") or (mode == "auto" and not sys.stderr.isatty()):
        return False
    try:
        import rich.progress  # noqa: F401
    except ImportError:
        return False
    return True


def _say(text: str) -> None:
    """A progress line: through the ``tunesmith`` logger where logging is set up (training,
    ``tunesmith eval``; it then also reaches ``train.log``), else straight to stderr, so that a
    command that configures no logging still shows it."""
    if log.handlers or logging.getLogger().handlers:
        log.info("%s", text)
    else:
        print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class TaskProgress:
    """``with TaskProgress("base: generating replies", total=40, unit="prompts") as p: p.advance(8)``.

    On a terminal a transient rich bar (count, elapsed and remaining time). Otherwise a log line
    every ``every_s`` seconds while the task runs — from a timer, so a single long call (loading
    a model, llama.cpp quantising) is reported too — with the count, the stage and the time left
    at the rate so far, and a closing line with the time it took. A task done within
    ``every_s`` prints nothing. ``total`` None: a count (or only stages) without a bar length.
    ``mode``: as ``train.progress`` (auto, bar, lines, none)."""

    def __init__(
        self,
        description: str,
        total: int | None = None,
        unit: str = "",
        *,
        mode: str = "auto",
        every_s: float = 10.0,
    ):
        self.description, self.total, self.unit = description, total, unit
        self.mode, self.every_s = mode, every_s
        self.done, self.stage_text, self.lines = 0, "", 0
        self._bar = self._task = self._ticker = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._t0 = self._stage_t0 = time.monotonic()

    def __enter__(self) -> TaskProgress:
        self._t0 = self._stage_t0 = time.monotonic()
        if use_bar(self.mode):
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(self.unit),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total)
        elif self.mode != "none":
            self._ticker = threading.Thread(target=self._tick, name="tunesmith-progress", daemon=True)
            self._ticker.start()
        return self

    def _tick(self) -> None:
        while not self._stop.wait(self.every_s):
            self._line()

    def _line(self) -> None:
        with self._lock:
            now = time.monotonic()
            parts = [self.stage_text] if self.stage_text else []
            if self.total is not None or self.done:
                parts.append(
                    f"{self.done}{f'/{self.total}' if self.total is not None else ''} {self.unit}".rstrip()
                )
            if self.total and 0 < self.done < self.total:
                rate = (now - self._stage_t0) / self.done
                parts.append(f"{_clock(rate * (self.total - self.done))} left")
            parts.append(f"{_clock(now - self._t0)} so far")
            self.lines += 1
        _say(f"{self.description}: {', '.join(parts)}")

    def stage(self, text: str, total: int | None = None) -> None:
        """A new phase of the task (``"dequantising tensors"``), restarting the count at 0 of
        ``total``; shown as the bar's description on a terminal, in the next line otherwise."""
        with self._lock:
            self.stage_text, self.done, self.total = text, 0, total
            self._stage_t0 = time.monotonic()
        if self._bar is not None:
            self._bar.update(self._task, description=f"{self.description}: {text}", completed=0, total=total)

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def update(self, done: int, total: int | None = None) -> None:
        """``done`` units finished (of ``total``, when it is known only now)."""
        with self._lock:
            self.done = done
            if total is not None:
                self.total = total
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=self.total)

    def __exit__(self, exc_type, *_) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self._bar is not None:
            self._bar.stop()
        elif exc_type is None and self.lines:
            _say(f"{self.description}: done in {_clock(time.monotonic() - self._t0)}")
