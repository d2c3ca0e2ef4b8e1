"""Each method's run report and console show its own progress signal with correct labels
(GRPO's reward, DPO's pair accuracy and margin), and "Largest changes" ranks by the metric that
moved. The run folders are written as training writes them: ``config.resolved.yaml`` naming the
method and ``metrics.jsonl`` rows with the keys each method's ``summarize`` logs."""

from __future__ import annotations

import json
import logging

import pytest

from tunesmith.eval.report import render_html
from tunesmith.eval.runner import highlights
from tunesmith.eval.training import run_report


def _run(tmp_path, method: str, rows: list[dict]):
    (tmp_path / "config.resolved.yaml").write_text(
        f"method: {method}\npreference:\n  loss: ipo\n", encoding="utf-8"
    )
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return tmp_path


def _dpo_rows():
    rows = [{"step": 0, "eval_loss": 0.693, "eval_accuracy": 0.5, "eval_margin": 0.0, "eval_tokens": 8}]
    for step in (1, 2, 3, 4):
        rows.append(
            {"step": step, "loss": 0.69 - 0.1 * step, "lr": 1e-4, "tokens_per_s": 10.0}
            | {"accuracy": 0.5 + 0.1 * step, "margin": 0.2 * step}
        )
    rows[-1].update({"eval_loss": 0.35, "eval_accuracy": 0.875, "eval_margin": 0.9, "eval_tokens": 8})
    return rows


def test_dpo_report_labels_its_pair_loss_and_pair_accuracy(tmp_path):
    report = run_report(_run(tmp_path, "dpo", _dpo_rows()))
    labels = report["labels"]
    assert labels["eval_loss"] == ["eval pair loss (ipo, per pair)", False]
    assert labels["eval_accuracy"] == ["eval pair accuracy (chosen reward > rejected)", True]
    assert labels["eval_margin"][1] is True
    last = report["metrics"]["step 4"]
    assert last["eval_accuracy"]["value"] == 0.875 and last["eval_margin"]["value"] == 0.9
    assert report["comparisons"][0]["metrics"]["eval_accuracy"]["diff"] == pytest.approx(0.375)
    html = render_html(report)
    assert "token accuracy" not in html and "nats/token" not in html
    assert "eval pair accuracy (chosen reward &gt; rejected) ↑" in html
    # No interval is promised where none is shown, and eval_generate (SFT only) is not suggested.
    assert "bootstrap interval]" not in html and "values only, no intervals" in html
    assert "eval_generate" not in " ".join(report["notes"])
    signals = {s["key"]: s for s in report["training"]["signals"]}
    assert signals["accuracy"]["values"] == pytest.approx([0.6, 0.7, 0.8, 0.9])
    assert signals["accuracy"]["eval_steps"] == [0, 4]


def test_grpo_report_charts_reward_higher_is_better(tmp_path):
    rows = [{"step": 0, "eval_loss": 0.0, "eval_reward": 0.1, "eval_kl": 0.0, "eval_tokens": 4}]
    rows += [
        {"step": s, "loss": 0.01 * s, "lr": 1e-5, "tokens_per_s": 5.0, "reward": 0.1 * s, "kl": 0.01 * s}
        for s in (1, 2, 3)
    ]
    rows[-1].update({"eval_loss": 0.02, "eval_reward": 0.6, "eval_kl": 0.03, "eval_tokens": 4})
    report = run_report(_run(tmp_path, "grpo", rows))
    training = report["training"]
    assert "not a progress measure" in training["loss_label"]
    reward = next(s for s in training["signals"] if s["key"] == "reward")
    assert reward["higher_is_better"] and reward["values"] == pytest.approx([0.1, 0.2, 0.3])
    assert reward["eval_values"] == [0.1, 0.6]
    assert report["labels"]["eval_reward"] == ["eval mean reward of the sampled completions", True]
    # The policy loss gets no "lower is better": it is not a progress measure.
    assert report["labels"]["eval_loss"][1] is None and training["loss_is_progress"] is False
    assert report["comparisons"][0]["metrics"]["eval_reward"]["diff"] == pytest.approx(0.5)
    pytest.importorskip("matplotlib")
    html = render_html(report)
    assert "<h2>Training</h2><img" in html  # loss and reward panels in one figure
    assert "eval policy loss (GRPO objective; not a progress measure) </td>" in html


def test_sft_report_still_suggests_eval_generate(tmp_path):
    rows = [{"step": 0, "eval_loss": 2.0, "eval_ppl": 7.4, "eval_accuracy": 0.2, "eval_tokens": 50}]
    rows += [{"step": 1, "loss": 1.5, "lr": 1e-4, "tokens_per_s": 9.0, "accuracy": 0.3}]
    rows[-1].update({"eval_loss": 1.4, "eval_ppl": 4.1, "eval_accuracy": 0.35, "eval_tokens": 50})
    report = run_report(_run(tmp_path, "sft", rows))
    assert "train.eval_generate" in report["notes"][0]
    assert report["labels"]["eval_loss"] == ["eval loss (nats/token)", False]
    assert report["labels"]["eval_accuracy"][0] == "eval token accuracy (argmax = target)"


def _row(a_scores: dict, b_scores: dict) -> dict:
    return {"scores": {"tuned": a_scores, "base": b_scores}, "answers": {}, "source": "x"}


def test_largest_changes_rank_by_the_metric_that_moved():
    # keywords: 0 for both everywhere (no keywords in the data); ROUGE-L won 4 of 5; loss moved
    # a hair everywhere but only ranks when no reply metric changed.
    rows = [
        _row(
            {"keywords": 0.0, "rouge_l": 0.2 * i, "loss": 1.0}, {"keywords": 0.0, "rouge_l": 0.0, "loss": 1.1}
        )
        for i in range(5)
    ]
    h = highlights(rows, "tuned", "base")
    assert h["metric"] == "rouge_l" and (h["changed"], h["compared"]) == (4, 5)
    assert h["improvements"] == [4, 3, 2, 1]
    html = render_html(
        {
            "title": "t",
            "models": [{"name": "tuned"}, {"name": "base"}],
            "metrics": {},
            "examples": [{**r, "answers": {"tuned": "a", "base": "b"}} for r in rows],
            "highlights": [{"model": "tuned", "baseline": "base", **h}],
        }
    )
    assert "the metric that changed on most examples (4 of 5)" in html
    same = [_row({"rouge_l": 0.5, "loss": 1.0}, {"rouge_l": 0.5, "loss": 1.2 + i}) for i in range(3)]
    assert highlights(same, "tuned", "base")["metric"] == "loss"


def test_console_shows_each_methods_signal_and_says_evaluating(caplog):
    from tunesmith.config.registry import METHODS
    from tunesmith.engine.metrics import Progress

    caplog.set_level(logging.INFO, logger="tunesmith")
    progress = Progress(4, 0, "lines", 1, signals=METHODS["grpo"].signals)
    progress.evaluating(0, 3)
    progress.update({"step": 1, "loss": 0.01, "lr": 1e-5, "tokens_per_s": 12.0, "reward": 0.25, "kl": 0.002})
    dpo = Progress(4, 0, "none", 1, signals=METHODS["dpo"].signals)
    progress.close()
    text = caplog.text
    assert "step 0: evaluating the held-out set (3 batches)" in text
    assert "step 1/4 | loss 0.0100 | reward 0.250 | kl 0.002 | lr" in text
    assert dpo.row_text({"eval_loss": 0.4, "eval_accuracy": 0.75, "eval_margin": 1.5}, "eval_") == (
        "eval_loss 0.4000 | eval_acc 0.750 | eval_margin 1.500"
    )
