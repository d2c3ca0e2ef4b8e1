"""``report.json`` and a self-contained ``report.html`` from an evaluation result.

The report dict (what ``report.json`` holds) has these keys:

- ``title``, ``created`` (ISO time), ``settings`` (decoding, seed, bootstrap settings …);
- ``models``: ``[{"name", "kind", "path", "seconds"?}]`` in column order (the first is the one
  compared against the others);
- ``metrics``: ``{model: {metric: {"value", "low", "high", "n"}}}``;
- ``comparisons``: ``[{"model", "baseline", "metrics": {metric: {"diff", "low", "high", "win",
  "tie", "loss", "n", "a", "b"}}}]``;
- ``examples``: rows with ``source``, ``prompt``, ``reference``, ``answers`` and ``scores`` per model;
- ``highlights``: ``[{"model", "baseline", "metric", "improvements": [row index], "regressions": [...]}]``;
- ``training``: ``{"method", "loss_label", "steps", "loss", "eval_steps", "eval_loss", "signals"}``
  from the run's metrics.jsonl (see :func:`training_curves`), or None;
- ``labels``: ``{metric: [label, higher is better]}`` overriding the default labels (a training
  method's own loss and signals), optional;
- ``notes``: free-text lines shown under the title.

The HTML embeds every plot as a base64 PNG (matplotlib, Agg backend) and has no external
resource, so it can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
from pathlib import Path

from .. import rundir
from .runner import metric_info

log = logging.getLogger("tunesmith")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1200px;
color:#1d2433;padding:0 1rem;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #d8dde6}
table{border-collapse:collapse;margin:.5rem 0;font-size:.92rem}th,td{border:1px solid #d8dde6;padding:.3rem .55rem;
vertical-align:top;text-align:left}th{background:#f2f4f8}td.num{text-align:right;font-variant-numeric:tabular-nums;
white-space:nowrap}.better{background:#e3f6e8}.worse{background:#fbe4e4}.muted{color:#6b7385;font-size:.88rem}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1rem}.pair table{width:100%}pre{white-space:pre-wrap;margin:0;
font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.84rem}img{max-width:100%;border:1px solid #eef0f4}
"""


def fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.1f}"
        return f"{value:.{digits}f}"
    return str(value)


def _interval(d: dict, key: str = "value") -> str:
    text = fmt(d.get(key))
    if d.get("low") is not None and d.get("high") is not None:
        text += f" [{fmt(d['low'])}, {fmt(d['high'])}]"
    return text


def label_of(report: dict, metric: str) -> tuple[str, bool | None]:
    """(label, higher is better) of ``metric``: the report's own ``labels`` entry (a training
    method's loss and signals, e.g. DPO's pair accuracy) over the evaluation's defaults. None:
    no direction (GRPO's policy loss is not a progress measure)."""
    own = report.get("labels", {}).get(metric)
    return (own[0], own[1]) if own else metric_info(metric)


def _direction(report: dict, metric: str, cmp: dict) -> str:
    """'better' / 'worse' when the whole interval lies on one side of 0, else ''."""
    low, high = cmp.get("low"), cmp.get("high")
    if low is None or high is None:
        return ""
    higher_better = label_of(report, metric)[1]
    if higher_better is None:
        return ""
    if low > 0 or high < 0:
        up = low > 0
        return "better" if up == higher_better else "worse"
    return ""


def write_report(report: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / "report.json", out_dir / "report.html"
    json_path.write_text(json.dumps(report, indent=1, default=_json_default), encoding="utf-8")
    html_path.write_text(render_html(report), encoding="utf-8")
    return json_path, html_path


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


# ---- HTML -------------------------------------------------------------------------------------


def render_html(report: dict) -> str:
    e = html.escape
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{e(report['title'])}</title>"
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{e(report['title'])}</h1>",
        f"<p class='muted'>{e(report.get('created', ''))}</p>",
    ]
    for note in report.get("notes", []):
        parts.append(f"<p>{e(note)}</p>")
    parts.append(_models_section(report))
    parts.append(_training_section(report.get("training")))
    parts.append(_table_section(report))
    parts.append(_charts_section(report))
    parts.append(_examples_section(report))
    parts.append(_settings_section(report.get("settings", {})))
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)


def _models_section(report: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(m['name'])}</td><td>{html.escape(m.get('kind', ''))}</td>"
        f"<td>{html.escape(str(m.get('path', '')))}</td>"
        f"<td class='num'>{fmt(m.get('seconds'), 1)}</td></tr>"
        for m in report.get("models", [])
    )
    return (
        "<h2>Models</h2><table><tr><th>name</th><th>kind</th><th>from</th><th>eval seconds</th></tr>"
        f"{rows}</table>"
    )


def _metric_order(report: dict) -> list[str]:
    seen = []
    for per_model in report.get("metrics", {}).values():
        for m in per_model:
            if m not in seen:
                seen.append(m)
    for c in report.get("comparisons", []):
        for m in c["metrics"]:
            if m not in seen:
                seen.append(m)
    return seen


def _table_section(report: dict) -> str:
    metrics = _metric_order(report)
    if not metrics:
        return "<h2>Metrics</h2><p>No metric could be computed on this data.</p>"
    models = [m["name"] for m in report.get("models", [])]
    comparisons = report.get("comparisons", [])
    head = "<tr><th>metric</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in models)
    for c in comparisons:
        head += f"<th>{html.escape(c['model'])} − {html.escape(c['baseline'])}</th><th>win / tie / loss</th>"
    body = []
    for metric in metrics:
        label, higher = label_of(report, metric)
        arrow = "" if higher is None else "↑" if higher else "↓"
        row = f"<tr><td>{html.escape(label)} {arrow}</td>"
        for name in models:
            d = report["metrics"].get(name, {}).get(metric)
            row += f"<td class='num'>{_interval(d) if d else '–'}</td>"
        for c in comparisons:
            d = c["metrics"].get(metric)
            if d is None:
                row += "<td class='num'>–</td><td class='num'>–</td>"
                continue
            cls = _direction(report, metric, d)
            wtl = f"{d['win']} / {d['tie']} / {d['loss']}" if "win" in d else "–"
            row += f"<td class='num {cls}'>{_interval(d, 'diff')}</td><td class='num'>{wtl}</td>"
        body.append(row + "</tr>")
    conf = report.get("settings", {}).get("confidence", 0.95)
    cells = [d for per_model in report.get("metrics", {}).values() for d in per_model.values()]
    cells += [d for c in comparisons for d in c["metrics"].values()]
    with_ci = [d.get("low") is not None and d.get("high") is not None for d in cells if isinstance(d, dict)]
    if all(with_ci):
        caption = (
            f"value [{conf:.0%} bootstrap interval]; differences are paired over the same examples "
            "(green: the whole interval shows an improvement, red: a regression)"
        )
    elif any(with_ci):
        caption = (
            f"value [{conf:.0%} bootstrap interval] where per-example values exist; a value without "
            "brackets has no interval (a mean logged during training, with no per-example values); "
            "differences are paired over the same examples (green / red: the whole interval shows "
            "an improvement / a regression)"
        )
    else:
        caption = (
            "values only, no intervals: these are means logged during training, without per-example "
            "values to bootstrap (tunesmith eval RUN --compare base gives paired intervals)"
        )
    return (
        f"<h2>Metrics</h2><p class='muted'>{caption}; ↑ higher is better, ↓ lower is better.</p>"
        f"<table>{head}</tr>{''.join(body)}</table>"
    )


def _examples_section(report: dict) -> str:
    rows = report.get("examples", [])
    out = []
    for h in report.get("highlights", []):
        if not h.get("metric"):
            continue
        a, b, metric = h["model"], h["baseline"], h["metric"]
        moved = (
            f", the metric that changed on most examples ({h['changed']} of {h['compared']})"
            if "changed" in h
            else ""
        )
        out.append(
            f"<h2>Largest changes: {html.escape(a)} vs {html.escape(b)}</h2>"
            f"<p class='muted'>ranked by {html.escape(label_of(report, metric)[0])}{html.escape(moved)}</p>"
            "<div class='pair'>"
        )
        for title, idx in (("Improvements", h["improvements"]), ("Regressions", h["regressions"])):
            cells = "".join(_example_block(rows[i], a, b, metric) for i in idx) or "<p>none</p>"
            out.append(f"<div><h3>{title}</h3>{cells}</div>")
        out.append("</div>")
    return "".join(out)


def _example_block(row: dict, a: str, b: str, metric: str) -> str:
    e = html.escape
    sa, sb = row["scores"].get(a, {}), row["scores"].get(b, {})
    return (
        "<table>"
        f"<tr><th>prompt</th><td><pre>{e(row.get('prompt') or '')}</pre>"
        f"<span class='muted'>{e(row.get('source', ''))}</span></td></tr>"
        f"<tr><th>reference</th><td><pre>{e(row.get('reference') or '–')}</pre></td></tr>"
        f"<tr><th>{e(b)}<br><span class='muted'>{metric} {fmt(sb.get(metric), 3)}</span></th>"
        f"<td><pre>{e(row['answers'].get(b, '–'))}</pre></td></tr>"
        f"<tr><th>{e(a)}<br><span class='muted'>{metric} {fmt(sa.get(metric), 3)}</span></th>"
        f"<td><pre>{e(row['answers'].get(a, '–'))}</pre></td></tr></table>"
    )


def _settings_section(settings: dict) -> str:
    if not settings:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(json.dumps(v, default=str))}</td></tr>"
        for k, v in settings.items()
    )
    return f"<h2>Settings</h2><table>{rows}</table>"


# ---- plots ------------------------------------------------------------------------------------


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "<img alt='chart' src='data:image/png;base64," + base64.b64encode(buf.getvalue()).decode() + "'>"


_NO_PLOTS = "<p class='muted'>Charts need matplotlib: pip install 'tunesmith[eval]'.</p>"


def _training_section(training: dict | None) -> str:
    """The loss curves, labelled with the method's loss, and one chart per progress signal of
    the method (GRPO's reward, DPO's pair accuracy and margin …) with its direction."""
    if not training or not training.get("steps"):
        return ""
    plt = _pyplot()
    if plt is None:
        return "<h2>Training</h2>" + _NO_PLOTS
    from matplotlib.ticker import MaxNLocator

    signals = [s for s in training.get("signals", []) if s.get("steps") or s.get("eval_steps")]
    fig, axes = plt.subplots(1, 1 + len(signals), figsize=(5.2 * (1 + len(signals)), 3.6), squeeze=False)
    panels = [
        {
            "label": training.get("loss_label", "loss (nats/token)"),
            "higher_is_better": False if training.get("loss_is_progress", True) else None,
            "steps": training["steps"],
            "values": training["loss"],
            "eval_steps": training.get("eval_steps", []),
            "eval_values": training.get("eval_loss", []),
            "name": "loss",
        },
        *[{**s, "name": s["key"]} for s in signals],
    ]
    for ax, panel in zip(axes[0], panels):
        if panel["steps"]:
            ax.plot(
                panel["steps"],
                panel["values"],
                label=f"training {panel['name']}",
                color="#4c72b0",
                linewidth=1.2,
            )
        if panel["eval_steps"]:
            ax.plot(
                panel["eval_steps"],
                panel["eval_values"],
                label=f"eval {panel['name']}",
                color="#dd8452",
                marker="o",
                linewidth=1.8,
            )
        ax.set_xlabel("optimizer step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        ax.set_ylabel(panel["label"])
        direction = panel["higher_is_better"]
        title = (
            "not a progress measure"
            if direction is None
            else "↑ higher is better"
            if direction
            else "↓ lower is better"
        )
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return "<h2>Training</h2>" + _png(fig)


def _charts_section(report: dict) -> str:
    models = [m["name"] for m in report.get("models", [])]
    metrics = [m for m in _metric_order(report) if any(m in report["metrics"].get(n, {}) for n in models)]
    if not metrics or not models:
        return ""
    plt = _pyplot()
    if plt is None:
        return "<h2>Charts</h2>" + _NO_PLOTS
    unit = [m for m in metrics if _is_unit_metric(m)]
    other = [m for m in metrics if m not in unit]
    html_parts = ["<h2>Charts</h2>"]
    for group, ylabel in ((unit, "score (0–1)"), (other, "value")):
        if group:
            html_parts.append(_bar_chart(plt, report, models, group, ylabel))
    return "".join(html_parts)


def _is_unit_metric(metric: str) -> bool:
    return (
        metric
        in (
            "token_accuracy",
            "exact_match",
            "normalized_exact_match",
            "token_f1",
            "rouge_l",
            "keywords",
            "regex",
            "json_valid",
            "json_schema_valid",
            "logp_pref_accuracy",
            "reward_accuracy",
            "eval_accuracy",
        )
        or metric.startswith("scorer:")
        or _is_lm_eval_share(metric)
    )


def _is_lm_eval_share(metric: str) -> bool:
    """An lm-eval metric that is a share of documents (``lm-eval:<task>:acc`` …)."""
    name = metric.rpartition(":")[2].partition(",")[0]
    return metric.startswith("lm-eval:") and name in ("acc", "acc_norm", "exact_match", "f1")


def _bar_chart(plt, report: dict, models: list[str], metrics: list[str], ylabel: str) -> str:
    """Bars of every model per metric with their bootstrap intervals as error bars. Metrics on
    a 0-1 scale share one axis; others (loss, perplexity …) get an axis each."""
    import numpy as np

    colours = ["#dd8452", "#4c72b0", "#55a868", "#c44e52", "#8172b3", "#937860"]
    # Baseline first (left) reads as "before -> after".
    order = models[1:] + models[:1]
    width = 0.8 / len(order)
    shared = ylabel.startswith("score")
    panels = [metrics] if shared else [[m] for m in metrics]
    if shared:
        fig, axes = plt.subplots(figsize=(max(5.0, 1.3 * len(metrics) + 2), 3.6))
        axes = [axes]
    else:
        fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels) + 0.5, 3.2), squeeze=False)
        axes = list(axes[0])
    for ax, group in zip(axes, panels):
        x = np.arange(len(group))
        for k, name in enumerate(order):
            vals, lows, highs = [], [], []
            for m in group:
                d = report["metrics"].get(name, {}).get(m) or {}
                v = d.get("value")
                vals.append(np.nan if v is None else v)
                lo, hi = d.get("low"), d.get("high")
                lows.append(0 if lo is None or v is None else max(v - lo, 0))
                highs.append(0 if hi is None or v is None else max(hi - v, 0))
            ax.bar(
                x + (k - (len(order) - 1) / 2) * width,
                vals,
                width,
                yerr=[lows, highs],
                capsize=3,
                label=name,
                color=colours[k % len(colours)],
            )
        ax.set_xticks(x)
        ax.set_xticklabels(
            [label_of(report, m)[0] for m in group],
            rotation=20 if shared else 0,
            ha="right" if shared else "center",
        )
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[0].legend()
    fig.tight_layout()
    return _png(fig)


def training_curves(run_dir: Path | None) -> dict | None:
    """Training and eval loss per step from ``RUN/metrics.jsonl`` (None when absent), with the
    method's loss label and its progress signals (``signals``: ``[{"key", "label",
    "higher_is_better", "steps", "values", "eval_steps", "eval_values"}]``) as the registry
    declares them for the run's ``method``."""
    if run_dir is None or not rundir.RunDir(run_dir).metrics.is_file():
        return None
    try:
        rows = rundir.RunDir(run_dir).read_metrics()
    except ValueError:
        log.warning("could not read %s/%s; the report has no training curves", run_dir, rundir.METRICS)
        return None
    spec, config = run_method(run_dir), _resolved_config(run_dir)
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval_loss" in r]

    def series(rows: list[dict], key: str) -> tuple[list, list]:
        pairs = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    signals = []
    for sig in spec.signals if spec else ():
        steps, values = series(train, sig.key)
        eval_steps, eval_values = series(evals, f"eval_{sig.key}")
        if steps or eval_steps:
            signals.append(
                {
                    "key": sig.key,
                    "label": sig.label,
                    "higher_is_better": sig.higher_is_better,
                    "steps": steps,
                    "values": values,
                    "eval_steps": eval_steps,
                    "eval_values": eval_values,
                }
            )
    return {
        "method": spec.name if spec else None,
        "loss_label": spec.loss_label.format(loss=(config.get("preference") or {}).get("loss", "sigmoid"))
        if spec
        else "loss",
        "loss_is_progress": spec.loss_is_progress if spec else True,
        "steps": [r["step"] for r in train],
        "loss": [r["loss"] for r in train],
        "eval_steps": [r["step"] for r in evals],
        "eval_loss": [r["eval_loss"] for r in evals],
        "signals": signals,
    }


def _resolved_config(run_dir: Path) -> dict:
    """``config.resolved.yaml`` of the run, {} when missing or unreadable."""
    import yaml

    try:
        config = rundir.RunDir(run_dir).read_resolved_config()
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def run_method(run_dir: Path):
    """The registry spec of the run's ``method`` (from ``config.resolved.yaml``), None when the
    folder records none."""
    from ..config.registry import METHODS

    config = _resolved_config(run_dir)
    return METHODS.get(config.get("method", "sft")) if config else None
