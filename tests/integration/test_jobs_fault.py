"""Fault test: SIGKILL a ``tunesmith worker`` process in the middle of training. Once another
worker runs, the job is taken over, resumes from its last complete checkpoint and ends with
the same adapter as an uninterrupted run of the same config."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "contract"))
from jobs_harness import Service, chat_rows, jsonl_bytes, wait_for, wait_status  # noqa: E402

pytest.importorskip("fastapi")


def test_killed_worker_job_resumes_to_the_uninterrupted_result(tmp_path, tiny_model_dir, fork_trainer):
    svc = Service(
        tmp_path,
        {"tiny": tiny_model_dir},
        poll_interval=0.2,
        stale_after=2.0,
        train_overrides=["train.max_length=128"],
    )
    first = None
    try:
        client = svc.client()
        train = client.files.create(
            file=("t.jsonl", jsonl_bytes(chat_rows(10, seed=7)), "application/jsonl"), purpose="fine-tune"
        )
        job = client.fine_tuning.jobs.create(
            model="tiny",
            training_file=train.id,
            seed=3,
            method={
                "type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 1}},
            },
        )
        run = svc.settings.run_dir(job.id)
        first = fork_trainer.start(svc.worker_argv(), tmp_path / "worker.log")  # a real process
        # Kill as soon as the first epoch's checkpoint (step 10 of 30) is committed.
        wait_for(
            lambda: (run / "checkpoints" / "step-000010" / "COMMITTED").is_file(), 240, 0.01, "checkpoint 10"
        )
        assert fork_trainer.stop() == -signal.SIGKILL
        steps_at_kill = len((run / "metrics.jsonl").read_text().splitlines())
        assert steps_at_kill < 30, "the job finished before the kill: the test proves nothing"
        assert client.fine_tuning.jobs.retrieve(job.id).status == "running"

        svc.start_worker()  # the survivor: a worker thread here (saves a second torch import)
        done = wait_status(client, job.id, ("succeeded", "failed", "cancelled"), timeout=300)
        assert done.status == "succeeded", done.error
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=200)]
        assert any("stopped responding" in m or "took over" in m for m in messages)
        steps = sorted(
            e.data["step"]
            for e in client.fine_tuning.jobs.list_events(job.id, limit=200)
            if e.type == "metrics"
        )
        assert steps == list(range(1, 31))  # every step reported exactly once
        log = (run / "train.log").read_text()
        assert "resumed from" in log

        # The same config, uninterrupted, in a fresh folder, run the way a worker runs it
        # (``tunesmith train config.yaml`` in its own process; forked: no second torch import).
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        cfg["output_dir"] = str(tmp_path / "reference")
        (tmp_path / "reference.yaml").write_text(yaml.safe_dump(cfg))
        rc, out = fork_trainer.run(["train", str(tmp_path / "reference.yaml")], tmp_path / "reference.log")
        assert rc == 0, out
        resumed = load_file(run / "final" / "adapter_model.safetensors")
        reference = load_file(tmp_path / "reference" / "final" / "adapter_model.safetensors")
        assert resumed.keys() == reference.keys()
        for name in reference:
            torch.testing.assert_close(resumed[name], reference[name], rtol=0, atol=1e-6)
        losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        ref_losses = [
            json.loads(line)["loss"]
            for line in (tmp_path / "reference" / "metrics.jsonl").read_text().splitlines()
        ]
        assert len(losses) == 30 and losses == pytest.approx(ref_losses, abs=1e-6)
    finally:
        if first is not None:
            fork_trainer.stop()  # the worker, when the test failed before killing it
        svc.close()
