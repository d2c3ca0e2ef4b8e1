"""2 processes (torchrun, gloo, CPU) train SFT exactly like 1 process with the same global
batch, with DDP and with FSDP2; a SIGKILLed rank stops the launcher and the run resumes exactly.

One process with ``grad_accum 2`` is the reference; two ranks with ``grad_accum 1`` see the
same 2 micro-batches per step (engine.distributed). ``max_tokens_per_forward`` splits some
micro-batches into two passes, so ranks run different numbers of passes (the FSDP padding path).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import time

import pytest
from ranks import alive, assert_same_run, descendants, finish, launch, rank_pid, run, write_config

from tunesmith.run import prepare, train

STEPS = 8
KEYS = ("loss", "accuracy", "grad_norm", "lr", "eval_loss", "eval_accuracy")


def _config(tmp_path, model, data, name: str, **train_over) -> dict:
    train_cfg = {
        "max_steps": STEPS,
        "batch_size": 2,
        "grad_accum": 1,
        "max_length": 64,
        "lr": 2e-3,
        "save_every": 3,
        "eval_every": 4,
        "keep_last": 3,
        "threads": 1,
        "progress": "lines",
        "max_tokens_per_forward": 80,
        "seed": 1,
        **train_over,
    }
    return {
        "model": str(model),
        "data": {"train": str(data[0]), "eval": str(data[1]), "max_eval_examples": 9},
        "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "train": train_cfg,
        "output_dir": str(tmp_path / name),
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir, color_data):
    """One process, grad_accum 2: the run the 2-rank runs must reproduce."""
    tmp = tmp_path_factory.mktemp("ref")
    cfg = _config(tmp, tiny_model_dir, color_data, "ref", grad_accum=2)
    train(cfg, resume=False)
    # The data really makes the two ranks run different numbers of passes in some steps.
    t = prepare({**cfg, "output_dir": str(tmp / "probe")}).trainer
    passes = [
        [len(t._passes([t.items[i] for i in t._micro_batch(g)])) for g in (2 * s, 2 * s + 1)]
        for s in range(STEPS)
    ]
    assert any(a != b for a, b in passes), passes
    return tmp / "ref"


def test_ddp_two_ranks_equal_one(tmp_path, tiny_model_dir, color_data, reference, fork_trainer):
    report_to = ["tensorboard"] if importlib.util.find_spec("tensorboard") else []
    cfg = _config(tmp_path, tiny_model_dir, color_data, "ddp", parallel="ddp", report_to=report_to)
    rc, out = run(fork_trainer, write_config(cfg))
    assert rc == 0, out
    assert out.count(f"trained {STEPS} steps") == 1  # rank 0 reports for the job
    assert_same_run(tmp_path / "ddp", reference, STEPS, KEYS)
    info = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert info["distributed"] == {"mode": "ddp", "world_size": 2, "global_batch": 4}
    if report_to:  # train.report_to: only rank 0 reports, each step once
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        assert len(list((tmp_path / "ddp" / "tensorboard").glob("events.out.tfevents.*"))) == 1
        events = EventAccumulator(str(tmp_path / "ddp" / "tensorboard"))
        events.Reload()
        assert [e.step for e in events.Scalars("loss")] == list(range(1, STEPS + 1))


def test_fsdp_sigkill_one_rank_then_resume_equals_one_process(
    tmp_path, tiny_model_dir, color_data, reference, fork_trainer
):
    config = write_config(_config(tmp_path, tiny_model_dir, color_data, "fsdp", parallel="fsdp"))
    launcher = launch(fork_trainer, config)
    marker = tmp_path / "fsdp" / "checkpoints" / "step-000003" / "COMMITTED"
    deadline = time.time() + 600
    while not marker.exists() and alive(launcher) and time.time() < deadline:
        time.sleep(0.002)
    victim = rank_pid(launcher, 1)
    assert victim is not None and alive(launcher), "training ended before a rank could be killed"
    workers = descendants(launcher)
    os.kill(victim, signal.SIGKILL)
    t0 = time.time()
    rc, out = finish(fork_trainer, config, timeout=300)  # the launcher notices and stops the other rank
    stopped_s = time.time() - t0
    assert rc != 0, out
    assert "distributed training stopped" in out
    assert not any(alive(p) for p in workers), "a worker outlived the launcher"
    assert not (tmp_path / "fsdp" / "final").exists()
    print(f"launcher stopped {stopped_s:.1f} s after SIGKILL of rank 1")

    rc, out = run(fork_trainer, config)
    assert rc == 0, out
    assert "resumed from" in out
    assert_same_run(tmp_path / "fsdp", reference, STEPS, KEYS)
