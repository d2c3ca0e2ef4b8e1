"""The thread budget of a worker and a server sharing one machine (tunesmith.threads)."""

from __future__ import annotations

import pytest
import torch

from tunesmith import threads
from tunesmith.jobs.settings import Settings
from tunesmith.jobs.worker import Worker


@pytest.mark.parametrize(
    ("cores", "split"), [(1, (1, 1)), (2, (1, 1)), (3, (2, 1)), (4, (3, 1)), (8, (6, 2)), (16, (12, 4))]
)
def test_service_split_gives_inference_a_quarter_and_training_the_rest(cores, split):
    assert threads.service_split(cores) == split


def test_available_cores_is_the_affinity():
    import os

    assert threads.available_cores() == len(os.sched_getaffinity(0))


def test_use_threads_caps_torch_and_the_children(monkeypatch):
    for name in threads.THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    try:
        threads.use_threads(3)
        assert torch.get_num_threads() == 3
        import os

        assert all(os.environ[name] == "3" for name in threads.THREAD_ENV)
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError):
        threads.use_threads(0)


def test_worker_runs_training_on_its_share(tmp_path):
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    default = Worker(Settings(db=db, data_dir=tmp_path))
    assert default.threads == threads.service_split()[0]
    worker = Worker(Settings(db=db, data_dir=tmp_path, threads=3))
    env = worker.training_env()
    assert all(env[name] == "3" for name in threads.THREAD_ENV)
    assert env["HF_HUB_OFFLINE"] == "1"


def test_cli_refuses_a_zero_budget(tmp_path, capsys):
    from tunesmith.cli import main

    assert main(["worker", "--data", str(tmp_path), "--threads", "0", "--once"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
