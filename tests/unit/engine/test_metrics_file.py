"""metrics.jsonl on resume: rows after the checkpoint are dropped, and a row cut off by a kill
does not stop the resume (issue 16)."""

from __future__ import annotations

import json

from tunesmith.engine.metrics import MetricsFile


def test_resume_keeps_rows_up_to_the_checkpoint_and_drops_a_torn_last_row(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3, 4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "lo')  # killed mid-write
    metrics = MetricsFile(path, resume_step=2)
    metrics.write({"step": 3, "loss": 0.5})
    metrics.close()
    got = [json.loads(line) for line in path.read_text().splitlines()]
    assert got == rows[:2] + [{"step": 3, "loss": 0.5}]
    assert "line 5: not a whole metrics row" in caplog.text
