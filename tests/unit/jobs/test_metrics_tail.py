"""The jobs worker follows ``metrics.jsonl`` by byte offset while a resumed run rewrites it.

Regression for a CI failure: the resumed run truncated the file to its checkpoint and replayed
later steps; the replayed rows carried different timing values (other byte lengths), so the file
grew back past the reader's old offset before the next poll, the reader seeked into the middle
of a row and that step's metrics event was never published."""

from __future__ import annotations

import json

from tunesmith.engine.metrics import MetricsFile
from tunesmith.jobs.progress import RunTail


def _row(step: int, pad: str) -> dict:
    return {"step": step, "loss": 1.0 / step, "tokens_per_s": 1234.5, "elapsed": pad}


def _follow(tail: RunTail) -> list[int]:
    return [r["step"] for r in tail.read_rows()]


def test_tail_publishes_every_step_across_a_resume_rewrite(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    tail = RunTail(run, {"last_step": 0, "total_steps": None})
    first = MetricsFile(run / "metrics.jsonl", None)
    for step in range(1, 13):
        first.write(_row(step, "x" * 20))
    first.close()  # the first attempt died after step 12; checkpoint at step 10
    seen = _follow(tail)
    assert seen == list(range(1, 13))

    resumed = MetricsFile(run / "metrics.jsonl", 10)
    # Replayed rows are shorter (other timings): the reader's old offset now falls inside row 13.
    for step in range(11, 16):
        resumed.write(_row(step, ""))
    resumed.close()
    seen += _follow(tail)
    assert seen == list(range(1, 16))  # 11 and 12 are not repeated, 13 is not lost


def test_tail_recovers_from_an_in_place_rewrite(tmp_path):
    """A writer that truncates in place (same inode) must not make the reader skip a row."""
    run = tmp_path / "run"
    run.mkdir()
    path = run / "metrics.jsonl"
    path.write_text("".join(json.dumps(_row(s, "x" * 20)) + "\n" for s in range(1, 6)))
    tail = RunTail(run, {"last_step": 0, "total_steps": None})
    assert _follow(tail) == [1, 2, 3, 4, 5]
    with open(path, "r+") as f:  # same inode, rows 4.. rewritten shorter: old offset inside row 6
        f.truncate(0)
        f.write("".join(json.dumps(_row(s, "" if s > 3 else "x" * 20)) + "\n" for s in range(1, 8)))
    assert _follow(tail) == [6, 7]


def test_resume_keeps_rows_up_to_the_checkpoint_and_survives_no_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    m = MetricsFile(path, None)
    for step in range(1, 6):
        m.write(_row(step, "x"))
    m.close()
    inode = path.stat().st_ino
    MetricsFile(path, 3).close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]
    assert path.stat().st_ino != inode  # replaced, so offset readers notice
    assert not path.with_name("metrics.jsonl.tmp").exists()
    MetricsFile(tmp_path / "absent.jsonl", 3).close()  # resuming with no metrics file yet


def test_tail_offers_only_checkpoints_that_verify(tmp_path):
    # A checkpoint damaged after its commit marker (issue 16) is never published as a model;
    # a rewrite of the same step (a new directory) is looked at afresh.
    import torch

    from tunesmith.engine.checkpoint import save_checkpoint

    run = tmp_path / "run"
    root = run / "checkpoints"

    def save(step):
        return save_checkpoint(
            root,
            step,
            trainable={"w": torch.full((4,), float(step))},
            optim_state={},
            rng={},
            state={"step": step},
            keep_last=5,
        )

    save(1)
    bad = save(2)
    (bad / "trainable.safetensors").write_bytes(b"cut")
    tail = RunTail(run, {"last_step": 0, "total_steps": None})
    tail.rows = {1: _row(1, ""), 2: _row(2, "")}
    assert tail.new_checkpoints() == [1]
    assert tail.new_checkpoints() == [] and tail.on_disk == {1, 2}
    save(2)
    assert tail.new_checkpoints() == [2]
