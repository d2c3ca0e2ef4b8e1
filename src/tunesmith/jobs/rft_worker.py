"""The worker's side of reinforcement jobs: validating their files and the progress format
(events, checkpoint metrics, results file). Their ``method: grpo`` run config is written by
:mod:`.translate`, like every job's.

* :func:`validate` — :mod:`.rft_data`'s checks with the base model's tokenizer and the run's
  ``train.max_length`` / ``grpo.max_new_tokens`` (:func:`.translate.max_length`,
  :func:`.translate.max_new_tokens`); a bad file fails the job as any job file does
  (``invalid_file_format`` naming the example, ``invalid_n_examples``), a file in which no prompt
  fits is ``invalid_training_file``; a good one is rewritten as GRPO rows and the job queued.
* :class:`Progress` — what :meth:`tunesmith.jobs.worker.Worker._publish` writes for an RFT job
  (:mod:`.rft_metrics`).
"""

from __future__ import annotations

from pathlib import Path

from . import rft, rft_metrics, translate
from .rft_data import check_rft_files, prompts_path, write_prompts

GRADER_PATH = "method.reinforcement.grader"


def _grader(job: dict) -> dict:
    return job["method"]["reinforcement"]["grader"]


def validate(worker, job: dict, train: Path, valid: Path | None, base: Path) -> None:
    """Check an RFT job's staged files and move it to ``queued`` or ``failed`` (module doc)."""
    from ..graders import item_keys, parse_grader
    from ..models.load import load_tokenizer

    required = item_keys(parse_grader(_grader(job), GRADER_PATH)) - {"messages", "prompt"}
    max_length = translate.max_length(worker.settings)
    room = max_length - translate.max_new_tokens(worker.settings)
    check = check_rft_files(train, valid, required=required, tokenizer=load_tokenizer(base), room=room)
    error = check.report.job_error()
    if error is not None:
        worker._fail(job, error["code"], error["message"], error["param"])
        return
    if not check.fitting:
        worker._fail(
            job,
            "invalid_training_file",
            "The job failed due to an invalid training file. Every "
            f"prompt is longer than {room} tokens (this server's maximum example length {max_length} "
            f"less the {max_length - room} tokens it samples per answer), so training would drop "
            f"every example; the first is example {check.first_too_long}.",
            "training_file",
        )
        return
    if check.too_long:
        worker.store.add_event(
            job["id"],
            f"{check.too_long} example(s) have prompts longer than {room} tokens "
            f"and will be skipped (the first is example {check.first_too_long})",
            level="warn",
        )
    for path in (train, valid):
        if path is not None:
            write_prompts(path)
    updated = worker.store.update_job(
        job["id"],
        expect_status=("validating_files",),
        worker_id=worker.worker_id,
        status="queued",
        n_examples=check.report.n_examples,
    )
    if updated is not None:
        worker.store.add_event(job["id"], "Files validated, moving job to queued state")


def ensure_prompts(run: Path, job: dict) -> None:
    """Rewrite the staged files as GRPO rows if that has not been done here (a restaged run)."""
    for name, fid in (("train.jsonl", job["training_file"]), ("valid.jsonl", job["validation_file"])):
        staged = run / "data" / name
        if fid is not None and not prompts_path(staged).is_file():
            write_prompts(staged)


def eval_samples_note(method: dict) -> str | None:
    """A ``warn`` event's text when the job's ``eval_samples`` is not what evaluation does."""
    h = method["reinforcement"]["hyperparameters"]
    size = rft.group_size(float(h["compute_multiplier"]))
    if h["eval_samples"] == size:
        return None
    return (
        f"eval_samples={h['eval_samples']} is not applied: each evaluation samples {size} answers per "
        "validation example (the group size that compute_multiplier sets)"
    )


class Progress:
    """Events, checkpoint metrics and results rows of an RFT job (:mod:`.rft_metrics`)."""

    results_header = rft_metrics.RESULTS_HEADER

    def __init__(self, job: dict):
        self.grader = _grader(job)

    def event(self, row: dict, total: int | None) -> tuple[str, dict]:
        return rft_metrics.step_message(row, total, self.grader), rft_metrics.event_data(
            row, total, self.grader
        )

    def checkpoint(self, row: dict) -> dict:
        return rft_metrics.checkpoint_metrics(row, self.grader)

    def results_row(self, row: dict) -> list:
        return rft_metrics.results_row(row)

    def baseline(self, row: dict) -> tuple[str, dict] | None:
        if "eval_reward" not in row:
            return None
        return rft_metrics.baseline_message(row), {
            "step": 0,
            "full_valid_mean_reward": row["eval_reward"],
            "valid_reward_std": row.get("eval_reward_std"),
        }
