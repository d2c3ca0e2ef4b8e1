"""report.html / report.json from a hand-made report dict, and the end-of-run report pieces."""

from __future__ import annotations

import json

from tunesmith.eval.report import render_html, write_report
from tunesmith.eval.training import GenerationEval


def _report():
    metric = lambda v, lo, hi: {"value": v, "low": lo, "high": hi, "n": 3}  # noqa: E731
    return {
        "title": "Evaluation of <tuned>",
        "created": "2026-01-01T00:00:00+00:00",
        "notes": ["a note"],
        "settings": {"seed": 0, "confidence": 0.95},
        "models": [
            {"name": "tuned", "kind": "adapter", "path": "runs/x/final"},
            {"name": "base", "kind": "base", "path": "models/b"},
        ],
        "metrics": {
            "tuned": {"exact_match": metric(2 / 3, 0.3, 1.0), "loss": metric(1.0, 0.9, 1.1)},
            "base": {"exact_match": metric(0.0, 0.0, 0.0), "loss": metric(0.5, 0.4, 0.6)},
        },
        "comparisons": [
            {
                "model": "tuned",
                "baseline": "base",
                "metrics": {
                    "exact_match": {
                        "diff": 2 / 3,
                        "low": 0.3,
                        "high": 1.0,
                        "win": 2,
                        "tie": 1,
                        "loss": 0,
                        "n": 3,
                    },
                    "loss": {"diff": 0.5, "low": 0.4, "high": 0.6, "win": 0, "tie": 0, "loss": 3, "n": 3},
                },
            }
        ],
        "examples": [
            {
                "source": "h.jsonl:1",
                "prompt": "user: q <b>",
                "reference": "r",
                "answers": {"tuned": "r", "base": "x"},
                "scores": {"tuned": {"exact_match": 1.0}, "base": {"exact_match": 0.0}},
            }
        ],
        "highlights": [
            {
                "model": "tuned",
                "baseline": "base",
                "metric": "exact_match",
                "improvements": [0],
                "regressions": [],
            }
        ],
        "training": {"steps": [1, 2, 3], "loss": [3.0, 2.0, 1.5], "eval_steps": [3], "eval_loss": [1.7]},
    }


def test_html_marks_improvements_and_regressions_and_escapes_text(tmp_path):
    page = render_html(_report())
    assert "Evaluation of &lt;tuned&gt;" in page and "q &lt;b&gt;" in page  # user text is escaped
    # exact match rose with an interval above 0 -> green; loss rose (lower is better) -> red
    assert "class='num better'>0.6667 [0.3000, 1.0000]" in page
    assert "class='num worse'>0.5000 [0.4000, 0.6000]" in page
    assert "2 / 1 / 0" in page and page.count("data:image/png;base64,") == 3
    json_path, html_path = write_report(_report(), tmp_path)
    assert json.loads(json_path.read_text())["comparisons"][0]["metrics"]["loss"]["loss"] == 3
    assert html_path.read_text().startswith("<!doctype html>")


def test_generation_log_replaces_rows_of_a_resumed_step(tmp_path):
    log = GenerationEval.__new__(GenerationEval)  # only the file logic, no model or tokenizer
    log.path = tmp_path / "eval_generations.jsonl"
    log._append(0, [{"step": 0, "source": "a"}])
    log._append(10, [{"step": 10, "source": "a"}])
    log._append(20, [{"step": 20, "source": "a"}])
    # resumed from the step-10 checkpoint: step 10 is evaluated again, the later rows go too
    log._append(10, [{"step": 10, "source": "a", "again": True}])
    rows = [json.loads(x) for x in log.path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 10] and rows[1]["again"]
