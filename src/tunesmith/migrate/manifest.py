"""The migration folder's manifest: ``DIR/manifest.json`` (the record) and ``DIR/SUMMARY.md``
(the same, for people).

Layout of a pulled folder::

    DIR/manifest.json          what was pulled, mapped, not mapped (with the reason), pushed
    DIR/SUMMARY.md             a readable table of the same
    DIR/files/<file id>.jsonl  each downloaded file, once (jobs sharing a file share it)
    DIR/runs/<job id>/         one run per job: config.yaml, data/train.jsonl, data/valid.jsonl;
                               `tunesmith train DIR/runs/<job id>/config.yaml` trains into it

``manifest.json``::

    {"version": 1, "source": {"base_url", "pulled_at"}, "options": {...},
     "files": {file_id: {"filename", "bytes", "purpose", "path", "status": downloaded|missing, "error"?}},
     "jobs": {job_id: {"job": <the job object as the API returned it>, "n_examples",
                       "status": mapped|unmapped|skipped, "reason"?, "config"?, "tunesmith"?, "notes"}},
     "push": {target base_url: {job_id: {"job", "training_file", "validation_file", "model"} | {"error"}}}}

Written atomically (a temporary file renamed over the old one), so an interrupted command
leaves the previous manifest whole.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import TunesmithError
from ..files import write_atomically

VERSION = 1
NAME, SUMMARY = "manifest.json", "SUMMARY.md"


def empty() -> dict:
    return {"version": VERSION, "source": {}, "options": {}, "files": {}, "jobs": {}, "push": {}}


def load(folder: Path, *, required: bool = False) -> dict:
    """The manifest of ``folder``; an empty one when there is none (unless ``required``)."""
    path = Path(folder) / NAME
    if not path.is_file():
        if required:
            raise TunesmithError(
                f"{folder} has no {NAME}: pull into it first (tunesmith openai pull --out {folder})"
            )
        return empty()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise TunesmithError(
            f"{path} is not valid JSON ({exc}); it is written by tunesmith openai pull"
        ) from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise TunesmithError(f"{path}: not a version-{VERSION} migration manifest")
    for key, value in empty().items():
        data.setdefault(key, value)
    return data


def save(folder: Path, manifest: dict) -> None:
    """Write ``manifest.json`` and ``SUMMARY.md`` atomically."""
    folder = Path(folder)
    write_atomically(folder / NAME, [json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"])
    write_atomically(folder / SUMMARY, [summary_text(manifest)])


def _cell(value) -> str:
    return str("–" if value is None or value == "" else value).replace("|", "\\|").replace("\n", " ")


def summary_text(manifest: dict) -> str:
    """SUMMARY.md: one table row per job (source method and hyperparameters -> tunesmith), the
    reasons of what was not mapped, the files, and the push mapping."""
    jobs = manifest["jobs"]
    lines = [
        f"# Migration from {manifest['source'].get('base_url', '?')}",
        "",
        f"{sum(j['status'] == 'mapped' for j in jobs.values())} of {len(jobs)} jobs mapped; "
        f"{sum(f['status'] == 'downloaded' for f in manifest['files'].values())} of "
        f"{len(manifest['files'])} files downloaded.",
        "",
        "| job | source status | base → open model | method → tunesmith | epochs | batch "
        "| lr (× multiplier) | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for job_id, entry in jobs.items():
        job, t = entry["job"], entry.get("tunesmith") or {}
        method = (job.get("method") or {}).get("type") or "supervised"
        lr = f"{t['lr']:.3g} (× {t['learning_rate_multiplier']})" if t else None
        mapped = entry["status"] == "mapped"
        result = f"mapped: `{entry['config']}`" if mapped else f"{entry['status']}: {entry['reason']}"
        lines.append(
            "| "
            + " | ".join(
                _cell(v)
                for v in (
                    job_id,
                    job.get("status"),
                    f"{job.get('model')} → {t.get('model', '–')}",
                    f"{method} → {t.get('method', '–')}" + (f" (β {t['beta']})" if "beta" in t else ""),
                    t.get("epochs"),
                    t.get("batch_size"),
                    lr,
                    result,
                )
            )
            + " |"
        )
    notes = [(job_id, n) for job_id, e in jobs.items() for n in e.get("notes", [])]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {job_id}: {n}" for job_id, n in notes]
    lines += ["", "## Files", "", "| file | name | bytes | status |", "|---|---|---|---|"]
    for file_id, f in manifest["files"].items():
        status = f["status"] if f["status"] == "downloaded" else f"{f['status']}: {f.get('error', '')}"
        lines.append(
            "| " + " | ".join(_cell(v) for v in (file_id, f.get("filename"), f.get("bytes"), status)) + " |"
        )
    for target, pushed in manifest["push"].items():
        lines += ["", f"## Pushed to {target}", "", "| source job | new job | model |", "|---|---|---|"]
        for job_id, p in pushed.items():
            lines.append(
                "| "
                + " | ".join(
                    _cell(v) for v in (job_id, p.get("job") or f"error: {p.get('error')}", p.get("model"))
                )
                + " |"
            )
    return "\n".join(lines) + "\n"
