"""``tunesmith worker``: claim jobs, validate their files, train them in a subprocess.

A worker loops: :meth:`Store.claim_job` hands it the oldest job that needs a worker (atomic; on
PostgreSQL ``FOR UPDATE SKIP LOCKED``). A ``validating_files`` job is checked with
:func:`tunesmith.data.tools.check.check_file` (OpenAI's codes and messages) and moved to ``queued``
or ``failed``. A ``queued`` job (or a ``running`` one whose worker stopped heartbeating) is
trained by ``python -m tunesmith train RUN/config.yaml`` in its own process group, so a crash
of the training cannot take the worker down; the run folder is fixed per job, so a second
attempt resumes from the newest complete checkpoint that the training core wrote.

While training runs the worker, every ``poll_interval`` seconds: heartbeats (which also tells
it when the job was cancelled or paused, or taken over: it then kills the training process
group, which stops training within a second or two); turns new ``metrics.jsonl`` rows into
``metrics`` events (:mod:`.progress`); and records new committed checkpoints as checkpoint objects. The training
process dies with the worker (``PR_SET_PDEATHSIG``), so a killed worker leaves no orphan that
would race the next attempt in the same folder.

Reinforcement jobs validate, configure and report through :mod:`.rft_worker` (GRPO with the
job's grader as the reward); everything else — claiming, the training process, heartbeats,
checkpoints, resume — is shared.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..threads import service_split, thread_env
from . import ids, translate
from .objects import base_name, job_model_id
from .progress import RunTail, progress_for
from .redact import public_text
from .settings import Settings
from .spec import hyperparameters, resolve_method
from .store import Store, now

log = logging.getLogger("tunesmith.worker")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: deliver SIGKILL to this (training) process when the worker that started it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Worker:
    def __init__(self, settings: Settings, store: Store | None = None, worker_id: str | None = None):
        self.settings = settings
        self.store = store or Store(settings.db)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{ids.random_id('', 6)}"
        self.stop_event = threading.Event()
        self._next_sweep = 0.0  # monotonic time of the next expired-file sweep
        self.threads = settings.threads or service_split()[0]
        """Compute threads of each training run: the training share of this machine's cores."""

    def training_env(self) -> dict[str, str]:
        """The environment of a training run: unbuffered output, no hub access, and its compute
        threads capped at the worker's share of the cores (:mod:`tunesmith.threads`)."""
        env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
        env.update(thread_env(self.threads))
        return env

    # -- the loop -------------------------------------------------------------------------------------
    def run(self, once: bool = False) -> int:
        """Work until stopped (or, with ``once``, until no job is waiting); jobs handled."""
        handled = 0
        while not self.stop_event.is_set():
            job = self.store.claim_job(self.worker_id, self.settings.stale_after)
            if job is None:
                self._sweep()
                if once:
                    break
                self.stop_event.wait(self.settings.poll_interval)
                continue
            handled += 1
            try:
                self.handle(job)
            except Exception as exc:  # a bug or an unreadable file must not kill the worker
                log.exception("job %s failed in the worker", job["id"])
                self._fail(job, "server_error", f"The job failed due to an internal error: {exc}", None)
            finally:
                self.store.release_job(job["id"], self.worker_id)
        return handled

    def _sweep(self) -> None:
        """Delete expired files while idle, at most once a minute (the server sweeps too)."""
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + 60.0
        from .blobs import BlobStore

        try:
            BlobStore(self.settings.files_dir).sweep_expired(self.store)
        except Exception:  # the database may be briefly unavailable; try again later
            log.exception("sweeping expired files failed")

    def handle(self, job: dict) -> None:
        if job["status"] == "validating_files":
            self.validate(job)
        elif job["status"] in ("queued", "running"):
            self.train(job)

    # -- validation -----------------------------------------------------------------------------------
    def _stage_files(self, job: dict) -> tuple[Path, Path | None] | None:
        """Copy the job's files into its run folder (``data/train.jsonl``, ``data/valid.jsonl``)."""
        from .blobs import BlobStore

        blobs = BlobStore(self.settings.files_dir)
        data = self.settings.run_dir(job["id"]) / "data"
        data.mkdir(parents=True, exist_ok=True)
        out = []
        for param, name in (("training_file", "train.jsonl"), ("validation_file", "valid.jsonl")):
            fid = job[param]
            if fid is None:
                out.append(None)
                continue
            src = blobs.path(fid) if self.store.get_file(job["project_id"], fid) else None
            if src is None or not src.is_file():
                self._fail(
                    job, "file_not_found", f"The {param.replace('_', ' ')} {fid} no longer exists.", param
                )
                return None
            shutil.copyfile(src, data / name)
            out.append(data / name)
        return out[0], out[1]

    def validate(self, job: dict) -> None:
        from ..data.tools.check import check_file
        from ..models.load import load_tokenizer

        staged = self._stage_files(job)
        if staged is None:
            return
        train, valid = staged
        base = self.settings.base_models.get(base_name(job))
        if base is None:
            self._fail(
                job,
                "model_not_available",
                f"Model {job['model']} is not available for fine-tuning on this worker.",
                "model",
            )
            return
        if job["method"]["type"] == "reinforcement":
            from .rft_worker import validate as validate_rft

            validate_rft(self, job, train, valid, base)
            return
        method = "dpo" if job["method"]["type"] == "dpo" else "sft"
        max_length = translate.max_length(self.settings)  # what the run will truncate at
        report = check_file(
            train,
            tokenizer=load_tokenizer(base),
            method=method,
            eval_path=valid,
            max_length=max_length,
            max_listed=1,
        )
        if not report.ok:
            first = report.errors[0]
            if first["code"] == "invalid_n_examples":
                self._fail(job, "invalid_n_examples", first["message"], "training_file")
            else:
                which = "training" if first["param"] == "training_file" else "validation"
                self._fail(
                    job,
                    "invalid_file_format",
                    f"The job failed due to a file format error in the {which} file. {first['message']}",
                    first["param"],
                )
            return
        if _nothing_to_train(report):
            self._fail(
                job,
                "invalid_training_file",
                _nothing_to_train_message(report, max_length),
                "training_file",
            )
            return
        truncated = report.warning_counts.get("example_truncated", 0)
        if truncated:
            self.store.add_event(
                job["id"],
                f"{truncated} example(s) are longer than {max_length} "
                "tokens and will be truncated from the end",
                level="warn",
            )
        updated = self.store.update_job(
            job["id"],
            expect_status=("validating_files",),
            worker_id=self.worker_id,
            status="queued",
            n_examples=report.n_examples,
        )
        if updated is not None:
            self.store.add_event(job["id"], "Files validated, moving job to queued state")

    # -- training -------------------------------------------------------------------------------------
    def _fail(self, job: dict, code: str, message: str, param: str | None) -> None:
        """Fail ``job`` with OpenAI's ``error`` and an error event; the message is made
        public first (:func:`public_text`: no server path reaches a client)."""
        message = public_text(message, self._public_names(job))
        # OpenAI leaves finished_at null when a job fails validation; a training failure sets it.
        finished = None if job["status"] == "validating_files" else now()
        updated = self.store.update_job(
            job["id"],
            expect_status=("validating_files", "queued", "running"),
            status="failed",
            error={"code": code, "message": message, "param": param},
            finished_at=finished,
        )
        if updated is not None:
            self.store.add_event(
                job["id"], message, level="error", data={"error_code": code, "error_param": param}
            )

    def _public_names(self, job: dict) -> dict:
        """Server paths a job's messages may hold -> what the client knows them by."""
        data = self.settings.run_dir(job["id"]) / "data"
        names = {data / "train.jsonl": f"the training file {job['training_file']}"}
        if job["validation_file"]:
            names[data / "valid.jsonl"] = f"the validation file {job['validation_file']}"
        names.update({folder: f"model {name}" for name, folder in self.settings.base_models.items()})
        return names

    def _write_config(self, job: dict) -> Path:
        """The job's run config (:mod:`.translate`), written into its run folder."""
        parent = self.store.get_job(None, job["parent_job_id"]) if job.get("parent_job_id") else None
        return translate.write_config(self.settings, job, job["method"], parent)

    def train(self, job: dict) -> None:
        run = self.settings.run_dir(job["id"])
        if job["status"] == "queued":
            method = resolve_method(job["method"], job["n_examples"] or 1)
            job = self.store.update_job(
                job["id"],
                expect_status=("queued",),
                worker_id=self.worker_id,
                status="running",
                method=method,
            )
            if job is None:
                return
            if job["attempts"] <= 1 or job["last_step"] == 0:
                self.store.add_event(job["id"], "Fine-tuning job started")
                self._start_notes(job)
            else:
                self.store.add_event(job["id"], f"Fine-tuning job resumed from step {job['last_step']}")
        else:
            self.store.add_event(
                job["id"],
                f"Worker {self.worker_id} took over the job; resuming from the last complete checkpoint",
                level="warn",
            )
        if not (run / "data" / "train.jsonl").is_file() and self._stage_files(job) is None:
            return
        from .rft_worker import ensure_prompts

        try:
            if job["method"]["type"] == "reinforcement":
                ensure_prompts(run, job)
            config = self._write_config(job)
        except translate.ParentGone as exc:
            self._fail(job, "model_not_available", str(exc), "model")
            return
        except translate.GraderUnavailable as exc:
            self._fail(job, "model_not_available", str(exc), "method.reinforcement.grader")
            return
        attempt = job["attempts"]
        logf = open(run / f"worker-attempt-{attempt}.log", "wb")
        env = self.training_env()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tunesmith", "train", str(config)],
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        tail = RunTail(run, job, progress_for(job))
        stopped = False
        try:
            while proc.poll() is None:
                status = self.store.heartbeat(job["id"], self.worker_id)
                if status != "running" or self.stop_event.is_set():
                    _kill_group(proc)
                    stopped = True
                    break
                self._publish(job, tail)
                time.sleep(self.settings.poll_interval)
        finally:
            if proc.poll() is None:
                _kill_group(proc)
            logf.close()
        self._publish(job, tail)
        if stopped:
            return
        if proc.returncode == 0:
            self._succeed(job, tail)
        else:
            self._fail(
                job,
                "server_error",
                "The job failed due to an internal error: "
                + _last_error_line(run / f"worker-attempt-{attempt}.log"),
                None,
            )

    # -- progress -------------------------------------------------------------------------------------
    def _publish(self, job: dict, tail: RunTail) -> None:
        """Metrics events for new steps, checkpoint objects for new committed checkpoints."""
        if tail.total_steps is None:
            tail.read_total()
            if tail.total_steps is not None:
                self.store.update_job(job["id"], worker_id=self.worker_id, total_steps=tail.total_steps)
        new_rows = tail.read_rows()
        baseline = tail.take_baseline()
        if baseline is not None:
            self.store.add_event(job["id"], baseline[0], data=baseline[1])
        if new_rows:
            self.store.add_metric_events(
                job["id"],
                self.worker_id,
                [tail.progress.event(row, tail.total_steps) for row in new_rows],
                tail.last_step,
            )
        for step in tail.new_checkpoints():
            ckpt_model = job_model_id(job, self.settings.owner, step)
            added = self.store.add_checkpoint(
                {
                    "id": ids.checkpoint_id(),
                    "job_id": job["id"],
                    "created_at": now(),
                    "fine_tuned_model_checkpoint": ckpt_model,
                    "step_number": step,
                    "metrics": tail.progress.checkpoint(tail.rows.get(step, {"step": step})),
                }
            )
            if added:
                self.store.add_event(
                    job["id"], f"Checkpoint created at step {step} with Snapshot ID: {ckpt_model}"
                )
        if tail.on_disk:
            self.store.delete_checkpoints_except(job["id"], sorted(tail.on_disk))

    def _start_notes(self, job: dict) -> None:
        """``warn`` events for settings a job asked for that this server does not apply."""
        if job["method"]["type"] == "reinforcement":
            from .rft_worker import eval_samples_note

            note = eval_samples_note(job["method"])
            if note:
                self.store.add_event(job["id"], note, level="warn")

    def _succeed(self, job: dict, tail: RunTail) -> None:
        from .blobs import BlobStore

        rows = [tail.rows[s] for s in sorted(tail.rows)]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(tail.progress.results_header)
        for r in rows:
            w.writerow(tail.progress.results_row(r))
        data = buf.getvalue().encode("utf-8")
        fid = ids.file_id()
        BlobStore(self.settings.files_dir).write(fid, data)
        self.store.add_file(
            {
                "id": fid,
                "project_id": job["project_id"],
                "bytes": len(data),
                "created_at": now(),
                "expires_at": None,
                "filename": "step_metrics.csv",
                "purpose": "fine-tune-results",
                "status": "processed",
                "status_details": None,
            }
        )
        model = job_model_id(job, self.settings.owner)
        fresh = self.store.get_job(None, job["id"])
        method = fresh["method"]
        trained = sum(int(r.get("tokens_total", 0)) for r in rows)
        updated = self.store.update_job(
            job["id"],
            expect_status=("running",),
            worker_id=self.worker_id,
            status="succeeded",
            fine_tuned_model=model,
            finished_at=now(),
            trained_tokens=trained,
            result_files=[fid],
            method=method,
        )
        if updated is not None:
            self.store.add_event(job["id"], f"New fine-tuned model created: {model}")
            self.store.add_event(job["id"], "The job has successfully completed")
        log.info("job %s succeeded: %s (%s)", job["id"], model, hyperparameters(method))


def _nothing_to_train(report) -> bool:
    """Every example of a valid file would be dropped by training (no trained token left after
    truncation at max_length, or all assistant turns weighted 0): the run would fail."""
    tokens = report.stats.get("tokens") or {}
    return bool(tokens.get("examples")) and tokens.get("dropped_no_trained_tokens", 0) >= tokens["examples"]


def _nothing_to_train_message(report, max_length: int) -> str:
    first = next((w for w in report.warnings if w["code"] == "no_trained_tokens"), None)
    example = f" {first['message']}." if first else ""
    return (
        "The job failed due to an invalid training file. No example has a trained (assistant) token "
        f"within the first {max_length} tokens, this server's maximum example length, so training "
        f"would drop every example.{example} Shorten the examples, or put an assistant turn within "
        f"the first {max_length} tokens."
    )


def _kill_group(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """SIGTERM the training process group, SIGKILL it after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _last_error_line(log_path: Path) -> str:
    try:
        lines = [
            ln.strip()
            for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines()
            if ln.strip()
        ]
    except OSError:
        return "training exited without output"
    errors = [ln for ln in lines if ln.startswith("error:") or "Error" in ln]
    return (errors or lines or ["training exited without output"])[-1][:500]
