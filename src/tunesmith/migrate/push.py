"""``tunesmith openai push``: re-create pulled jobs on a tunesmith server (or any server speaking
OpenAI's fine-tuning API) with the same SDK calls a client would make.

For each pulled job (oldest first; jobs that failed or were cancelled on the source are not
pushed) the downloaded files are uploaded (``files.create``, purpose ``fine-tune``) and the job
is created (``fine_tuning.jobs.create``) with the source's method and resolved hyperparameters,
suffix, seed and metadata plus ``{"migrated_from": <source job id>}``.

Idempotent: before creating, the target is asked for a job with that metadata
(``jobs.list(metadata=…)``); one found is recorded, not duplicated. Uploaded file ids are saved
in the manifest as soon as they exist, so a push interrupted between upload and create reuses
them. The mapping source job -> new job is kept in the manifest under ``push[<target URL>]``.
A job the target refuses (a 4xx: an unknown model, a method it does not support) is recorded
with the server's message and the others go on; an authentication failure stops the push.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import manifest as mf
from .client import APIRefused, with_retries
from .mapping import DEFAULT_BASE, source_method
from .pull import FILE_PARAMS

MIGRATED_FROM = "migrated_from"
MAX_METADATA = 16  # OpenAI's limit on metadata pairs


class PushRefused(Exception):
    """This job cannot be pushed; the message says why (recorded, the push goes on)."""


def job_suffix(job: dict) -> str | None:
    """The suffix the job was created with: ``user_provided_suffix`` (in real responses, not
    the spec) or the suffix field of its ``ft:`` model id (``ft:base:owner:SUFFIX:key``)."""
    if job.get("user_provided_suffix"):
        return job["user_provided_suffix"]
    parts = (job.get("fine_tuned_model") or "").split(":")
    return (parts[3] or None) if len(parts) >= 5 and parts[0] == "ft" else None


def create_params(job: dict, model: str, files: dict[str, str | None]) -> dict:
    """The ``jobs.create`` keyword arguments re-creating ``job`` on ``model`` with the uploaded
    ``files`` (``{"training_file": id, "validation_file": id | None}``)."""
    metadata = dict(job.get("metadata") or {})
    if MIGRATED_FROM not in metadata and len(metadata) >= MAX_METADATA:
        raise PushRefused(f"its metadata already has {len(metadata)} pairs; no room for {MIGRATED_FROM}")
    metadata[MIGRATED_FROM] = job["id"]
    params = {
        "model": model,
        "training_file": files["training_file"],
        "seed": job.get("seed"),
        "metadata": metadata,
        "method": source_method(job),
        "suffix": job_suffix(job),
    }
    if files.get("validation_file"):
        params["validation_file"] = files["validation_file"]
    return {k: v for k, v in params.items() if v is not None}


def push(
    client,
    folder: Path,
    *,
    base_url: str,
    models: dict[str, str],
    job_ids: list[str] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """Push the jobs pulled into ``folder`` (or ``job_ids``) to the server of ``client``;
    ``models`` maps a source base model name (or ``*``) to the target's model name (default:
    the same name). Returns the saved manifest."""
    folder = Path(folder).resolve()
    manifest = mf.load(folder, required=True)
    pushed = manifest["push"].setdefault(base_url, {})
    for old_id, entry in manifest["jobs"].items():
        if job_ids and old_id not in job_ids:
            continue
        if entry["status"] == "skipped":
            continue
        try:
            pushed[old_id], found = _push_job(client, folder, entry["job"], manifest, pushed, models)
            log(f"{old_id} -> {pushed[old_id]['job']}" + (" (already there)" if found else ""))
        except PushRefused as exc:
            kept = {k: v for k, v in pushed.get(old_id, {}).items() if k not in ("job", "error")}
            pushed[old_id] = {**kept, "error": str(exc)}
            log(f"{old_id}: not pushed: {exc}")
        mf.save(folder, manifest)
    return manifest


def _push_job(
    client, folder: Path, job: dict, manifest: dict, pushed: dict, models: dict[str, str]
) -> tuple[dict, bool]:
    """Find or create the job on the target; its push record, and whether it was there already."""
    old_id = job["id"]
    found = with_retries(
        lambda: list(client.fine_tuning.jobs.list(metadata={MIGRATED_FROM: old_id}, limit=100)),
        what=f"looking for {old_id} on the target",
    )
    prev = {k: v for k, v in pushed.get(old_id, {}).items() if k not in ("job", "error")}  # file ids kept
    if found:
        newest = max(found, key=lambda j: j.created_at)
        return {**prev, "job": newest.id, "model": newest.model}, True
    model = _target_model(client, job, manifest, pushed, models)
    files = {}
    for param, _ in FILE_PARAMS:
        old_file = job.get(param)
        files[param] = (
            _upload(client, folder, old_file, manifest, prev.get(param), param) if old_file else None
        )
        prev = {**prev, param: files[param]}
        pushed[old_id] = prev
        mf.save(folder, manifest)
    try:
        new = with_retries(
            lambda: client.fine_tuning.jobs.create(**create_params(job, model, files)),
            what="the target refused the job",
        )
    except APIRefused as exc:
        if exc.status in (401, 403):
            raise
        raise PushRefused(str(exc)) from None
    return {**prev, "job": new.id, "model": model}, False


def _target_model(client, job: dict, manifest: dict, pushed: dict, models: dict[str, str]) -> str:
    """The model to fine-tune on the target: for an ``ft:`` model, the target's model made by
    the pushed job that stands in for its source job (once that job has succeeded); for a base
    model, ``models[name]``, else ``models["*"]``, else the same name."""
    name = job["model"]
    if not name.startswith("ft:"):
        return models.get(name) or models.get(DEFAULT_BASE) or name
    final = name.split(":ckpt-step-")[0]
    parent = next((j for j, e in manifest["jobs"].items() if e["job"].get("fine_tuned_model") == final), None)
    new_parent = (pushed.get(parent) or {}).get("job") if parent else None
    if new_parent is None:
        raise PushRefused(f"it continues {name}, whose job was not pushed; push that job first")
    made = with_retries(lambda: client.fine_tuning.jobs.retrieve(new_parent), what=f"job {new_parent}")
    if not made.fine_tuned_model:
        raise PushRefused(
            f"it continues {parent}, pushed as {new_parent}, which has not succeeded yet "
            f"(status {made.status}); push again once it has"
        )
    return made.fine_tuned_model


def _upload(client, folder: Path, old_file: str, manifest: dict, uploaded: str | None, param: str) -> str:
    """The target's id of the downloaded ``old_file``: ``uploaded`` when the target still has it
    with the same size, else a fresh upload."""
    entry = manifest["files"].get(old_file) or {}
    if entry.get("status") != "downloaded":
        raise PushRefused(
            f"its {param.replace('_', ' ')} {old_file} was not downloaded "
            f"({entry.get('error', 'not pulled')})"
        )
    if uploaded:
        try:
            have = with_retries(lambda: client.files.retrieve(uploaded), what=f"file {uploaded}")
            if have.bytes == entry["bytes"]:
                return uploaded
        except APIRefused as exc:
            if exc.status != 404:
                raise
    path = folder / entry["path"]

    def create():
        with open(path, "rb") as f:  # streamed by the SDK; reopened on every try
            return client.files.create(
                file=(entry.get("filename") or path.name, f, "application/jsonl"), purpose="fine-tune"
            )

    try:
        made = with_retries(create, what=f"uploading {old_file}")
    except APIRefused as exc:
        if exc.status in (401, 403):
            raise
        raise PushRefused(str(exc)) from None
    return made.id
