"""Fault test for reinforcement jobs: SIGKILL a ``tunesmith worker`` process in the middle of an
RFT (GRPO) job. Another worker takes the job over, resumes from the last complete checkpoint,
and every reward and metric it logs — and the final adapter — equals an uninterrupted run's
(GRPO samples from the checkpointed RNG, so resume is exact; docs/grpo.md "Resuming")."""

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
from jobs_harness import Service, jsonl_bytes, wait_for, wait_status  # noqa: E402
from test_jobs_rft import rft_method, rft_rows  # noqa: E402

pytest.importorskip("fastapi")
TIMING = {"step_time_s", "tokens_per_s", "elapsed"}


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_killed_worker_rft_job_resumes_to_the_uninterrupted_result(tmp_path, tiny_model_dir, fork_trainer):
    svc = Service(
        tmp_path,
        {"tiny": tiny_model_dir},
        poll_interval=0.2,
        stale_after=2.0,
        train_overrides=[
            "train.max_length=64",
            "grpo.max_new_tokens=4",
            "adapter.modules_to_save=['lm_head']",
        ],
    )
    first = None
    try:
        client = svc.client()
        files = [
            client.files.create(
                file=(f"{n}.jsonl", jsonl_bytes(rft_rows(k, seed)), "application/jsonl"), purpose="fine-tune"
            )
            for n, k, seed in (("t", 24, 1), ("v", 8, 2))
        ]
        job = client.fine_tuning.jobs.create(
            model="tiny",
            training_file=files[0].id,
            validation_file=files[1].id,
            seed=3,
            method=rft_method(n_epochs=3, batch_size=4, eval_interval=6, learning_rate_multiplier=50),
        )
        run = svc.settings.run_dir(job.id)
        first = fork_trainer.start(svc.worker_argv(), tmp_path / "worker.log")  # a real process
        # Kill as soon as the first checkpoint (step 6 of 18) is committed.
        wait_for(
            lambda: (run / "checkpoints" / "step-000006" / "COMMITTED").is_file(), 240, 0.01, "checkpoint 6"
        )
        assert fork_trainer.stop() == -signal.SIGKILL
        assert len(_metrics(run)) < 19, "the job finished before the kill: the test proves nothing"

        svc.start_worker()
        done = wait_status(client, job.id, ("succeeded", "failed", "cancelled"), timeout=300)
        assert done.status == "succeeded", done.error
        events = list(client.fine_tuning.jobs.list_events(job.id, limit=200))
        assert any("took over" in e.message or "stopped responding" in e.message for e in events)
        assert sorted(e.data["step"] for e in events if e.type == "metrics") == list(range(1, 19))
        assert "resumed from" in (run / "train.log").read_text()

        # The same config, uninterrupted, in a fresh folder, run the way a worker runs it
        # (``tunesmith train config.yaml`` in its own process; forked: no second torch import).
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        cfg["output_dir"] = str(tmp_path / "reference")
        (tmp_path / "reference.yaml").write_text(yaml.safe_dump(cfg))
        rc, out = fork_trainer.run(["train", str(tmp_path / "reference.yaml")], tmp_path / "reference.log")
        assert rc == 0, out
        resumed, reference = _metrics(run), _metrics(tmp_path / "reference")
        assert [r["step"] for r in resumed] == list(range(0, 19))
        assert resumed == reference  # every reward, reward std, eval reward, loss and KL, exactly
        ours = load_file(run / "final" / "adapter_model.safetensors")
        theirs = load_file(tmp_path / "reference" / "final" / "adapter_model.safetensors")
        assert ours.keys() == theirs.keys()
        for name in theirs:
            torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=0)
        # What the API reported is what the run logged.
        last = next(e for e in events if e.type == "metrics" and e.data["step"] == 18)
        assert last.data["full_valid_mean_reward"] == reference[-1]["eval_reward"]
    finally:
        if first is not None:
            fork_trainer.stop()  # the worker, when the test failed before killing it
        svc.close()
