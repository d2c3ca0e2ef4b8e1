"""Early stopping on the eval loss and the best checkpoint (``train.early_stopping``,
``train.keep_best``): the bookkeeping, as a small state machine the training loop feeds with
each evaluation's loss.

Rules (docs/training.md, "Early stopping and the best checkpoint"):

- The *best* evaluation is the one with the lowest eval loss so far (the earliest among equal
  ones). The step-0 baseline (``train.eval_at_start``) is not a candidate: it has no checkpoint
  and is the model before training.
- An evaluation *improves* when its loss is below the best loss before it by more than
  ``min_delta`` (the first evaluation always improves). ``patience`` evaluations in a row that
  do not improve stop training, at the step of the last of them.
- A NaN loss is never best and never improves.

The state is plain JSON (:meth:`Selection.state` / :meth:`Selection.from_state`), saved in
every checkpoint's ``state.json`` so a resumed run continues the same count: resumed after a
kill equals uninterrupted, stopping step included.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class Verdict:
    """What one evaluation means: a new best (keep_best checkpoints it), and whether to stop."""

    new_best: bool
    stop: bool


@dataclass
class Selection:
    """The best evaluation so far and the early-stopping count.

    ``patience`` None: no early stopping (the best is still tracked for ``keep_best``)."""

    patience: int | None = None
    min_delta: float = 0.0
    best_step: int | None = None
    best_loss: float | None = None
    bad_evals: int = 0
    stopped_at: int | None = None

    def observe(self, step: int, loss: float) -> Verdict:
        """Record the evaluation at optimizer step ``step`` (>= 1) with eval loss ``loss``."""
        finite = not math.isnan(loss)
        first = self.best_loss is None
        improves = finite and (first or loss < self.best_loss - self.min_delta)
        new_best = finite and (first or loss < self.best_loss)
        if new_best:
            self.best_step, self.best_loss = step, loss
        self.bad_evals = 0 if improves else self.bad_evals + 1
        stop = self.patience is not None and self.bad_evals >= self.patience
        if stop:
            self.stopped_at = step
        return Verdict(new_best, stop)

    def state(self) -> dict:
        """JSON-able state for a checkpoint's ``state.json``."""
        return {k: v for k, v in asdict(self).items() if k not in ("patience", "min_delta")}

    def restore(self, saved: dict | None) -> None:
        """Continue from :meth:`state` saved in a checkpoint (None: a checkpoint written without
        it, whose run tracked nothing yet: start afresh)."""
        for key, value in (saved or {}).items():
            if key in ("best_step", "best_loss", "bad_evals", "stopped_at"):
                setattr(self, key, value)
