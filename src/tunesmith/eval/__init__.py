"""Evaluation: likelihood and generation metrics, model comparisons with paired bootstrap
intervals, and the HTML / JSON report (``tunesmith eval``; see docs/evaluation.md).

Entry points: :func:`tunesmith.eval.evaluate.run_eval` (a whole evaluation),
:mod:`.scorers` (metrics), :mod:`.stats` (intervals), :mod:`.report` (report files),
:mod:`.training` (generation metrics during training and the end-of-run report).
"""
