"""``tunesmith openai pull``: an account's fine-tuning jobs, their files and one run config each.

Every job the account lists (the SDK's cursor pagination) is processed oldest first:

1. its training and validation files are downloaded once into ``DIR/files/<file id>.jsonl``
   (streamed, checked against the file's ``bytes``); a file the manifest already holds with the
   same byte count is not requested again, so an interrupted pull resumes where it stopped and a
   second pull downloads nothing. A file the API no longer has (expired, deleted) is recorded
   as ``missing`` with the server's message;
2. a job that failed or was cancelled on the source is ``skipped`` (its files are still kept);
3. otherwise its files are staged as ``DIR/runs/<job id>/data/{train,valid}.jsonl`` and the job
   is mapped (:func:`tunesmith.migrate.mapping.map_job`) to ``DIR/runs/<job id>/config.yaml``,
   or recorded as ``unmapped`` with the reason.

The manifest (:mod:`.manifest`) is saved after every job; a job's earlier push record is kept.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from .. import rundir
from ..hashing import sha256_file
from . import manifest as mf
from .client import APIRefused, with_retries
from .mapping import MapOptions, Unmappable, job_dict, map_job

SKIPPED_STATUSES = ("failed", "cancelled")
FILE_PARAMS = (("training_file", "train.jsonl"), ("validation_file", "valid.jsonl"))


def list_jobs(client, job_ids: list[str] | None = None) -> list[dict]:
    """Every fine-tuning job of the account (all pages), oldest first, as plain dicts; with
    ``job_ids`` only those (an id the account does not list is an error)."""
    jobs = with_retries(
        lambda: [job_dict(j) for j in client.fine_tuning.jobs.list(limit=100)],
        what="listing fine-tuning jobs",
    )
    if job_ids:
        have = {j["id"] for j in jobs}
        unknown = [j for j in job_ids if j not in have]
        if unknown:
            raise APIRefused(f"--job {unknown[0]}: the account lists no such fine-tuning job")
        jobs = [j for j in jobs if j["id"] in job_ids]
    return jobs[::-1]  # the API lists newest first


def fetch_file(client, file_id: str, folder: Path, known: dict | None) -> dict:
    """Download ``file_id`` into ``folder/files/<id>.jsonl`` unless ``known`` (its manifest
    entry) says it is there with the same size. Returns the manifest entry: ``status``
    ``downloaded`` (with ``path`` relative to ``folder``, ``bytes``, ``sha256``) or ``missing``
    (with the server's ``error``)."""
    rel = Path("files") / f"{file_id}.jsonl"
    dest = folder / rel
    if (
        known
        and known.get("status") == "downloaded"
        and dest.is_file()
        and dest.stat().st_size == known["bytes"]
    ):
        return {**known, "reused": True}
    try:
        meta = with_retries(lambda: client.files.retrieve(file_id), what=f"file {file_id}")
    except APIRefused as exc:
        if exc.status in (404, 410):
            return {"status": "missing", "error": f"{exc} (expired or deleted on the source)"}
        raise
    entry = {"filename": meta.filename, "bytes": meta.bytes, "purpose": meta.purpose, "path": str(rel)}
    if not (dest.is_file() and dest.stat().st_size == meta.bytes):
        with_retries(lambda: _download(client, file_id, dest, meta.bytes), what=f"downloading {file_id}")
    return {**entry, "status": "downloaded", "sha256": sha256_file(dest)}


def _download(client, file_id: str, dest: Path, expected: int) -> None:
    """Stream the file's content to a temporary file and rename it into place once its size
    matches ``expected`` (a short read is an error, and leaves nothing at ``dest``)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    with client.files.with_streaming_response.content(file_id) as response, open(tmp, "wb") as f:
        for chunk in response.iter_bytes(1 << 20):
            f.write(chunk)
    size = tmp.stat().st_size
    if size != expected:
        tmp.unlink()
        raise APIRefused(f"file {file_id}: downloaded {size} bytes, but the API says it has {expected}")
    os.replace(tmp, dest)


def _stage(source: Path, target: Path) -> None:
    """``target`` holds ``source``'s bytes (a hard link when possible: a mapping that rewrites
    a staged file replaces the link, never the downloaded original)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _count_rows(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def pull(
    client,
    out: Path,
    options: MapOptions,
    *,
    base_url: str,
    job_ids: list[str] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """Pull every job (or ``job_ids``) into ``out``; returns the saved manifest."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    manifest = mf.load(out)
    manifest["source"] = {"base_url": base_url, "pulled_at": int(time.time())}
    manifest["options"] = {
        "base_models": options.base_models,
        "adapter": options.adapter,
        "overrides": options.overrides,
        "judge_model": options.judge_model,
    }
    jobs = list_jobs(client, job_ids)
    log(f"{len(jobs)} fine-tuning job(s) on {base_url}")
    for job in jobs:
        manifest["jobs"][job["id"]] = _pull_job(client, out, job, options, manifest)
        entry = manifest["jobs"][job["id"]]
        log(f"{job['id']}: {entry['status']}" + (f" ({entry['reason']})" if entry.get("reason") else ""))
        mf.save(out, manifest)
    mf.save(out, manifest)
    return manifest


def _pull_job(client, out: Path, job: dict, options: MapOptions, manifest: dict) -> dict:
    """Download the job's files and map it; the job's manifest entry."""
    files = manifest["files"]
    for param, _ in FILE_PARAMS:
        if job.get(param):
            files[job[param]] = fetch_file(client, job[param], out, files.get(job[param]))
    entry = {"job": job, "n_examples": None, "notes": []}
    if job.get("status") in SKIPPED_STATUSES:
        error = (job.get("error") or {}).get("message")
        return {
            **entry,
            "status": "skipped",
            "reason": f"the job {job['status']} on the source"
            + (f": {error}" if error else "")
            + "; nothing to reproduce (its files are kept)",
        }
    train = files[job["training_file"]]
    if train["status"] != "downloaded":
        return {
            **entry,
            "status": "unmapped",
            "reason": f"training file {job['training_file']} could not be downloaded: {train['error']}",
        }
    run = out / "runs" / job["id"]
    if (run / "data").is_dir():
        shutil.rmtree(run / "data")
    _stage(out / train["path"], run / "data" / "train.jsonl")
    job_used = dict(job)
    valid_id = job.get("validation_file")
    if valid_id and files[valid_id]["status"] == "downloaded":
        _stage(out / files[valid_id]["path"], run / "data" / "valid.jsonl")
    elif valid_id:
        job_used["validation_file"] = None
        entry["notes"].append(
            f"validation file {valid_id} could not be downloaded "
            f"({files[valid_id]['error']}); trained without held-out loss"
        )
    entry["n_examples"] = _count_rows(run / "data" / "train.jsonl")
    try:
        mapped = map_job(job_used, run, entry["n_examples"], options)
    except Unmappable as exc:
        return {**entry, "status": "unmapped", "reason": str(exc)}
    entry["notes"] += mapped.notes + _continue_parent(job, mapped.config, manifest, out)
    return {
        **entry,
        "status": "mapped",
        "config": str(mapped.config.relative_to(out)),
        "tunesmith": mapped.summary,
    }


def _continue_parent(job: dict, config: Path, manifest: dict, out: Path) -> list[str]:
    """Continued fine-tuning (``model`` is an ``ft:`` model): start from the run of the pulled job
    that made it (``adapter.init_from``), as the jobs worker starts from its parent's adapter."""
    model = job.get("model") or ""
    if not model.startswith("ft:"):
        return []
    final_model = model.split(":ckpt-step-")[0]
    parent = next(
        (
            j
            for j, e in manifest["jobs"].items()
            if e["job"].get("fine_tuned_model") == final_model and e["status"] == "mapped"
        ),
        None,
    )
    if parent is None:
        return [f"continues {model}, which no mapped job of this pull made; trained from the open base"]
    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    cfg["adapter"]["init_from"] = str(rundir.RunDir(out / "runs" / parent).final)
    config.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    note = f"continues {parent}: train {parent} first (adapter.init_from is its final/)"
    if model != final_model:
        note += f"; the source started from checkpoint {model.rsplit(':', 1)[1]}, here from the final model"
    return [note]
