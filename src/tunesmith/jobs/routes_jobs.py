"""``/v1/fine_tuning/jobs``: create, list (with ``metadata[k]=v`` filters), retrieve, cancel, pause,
resume, events and checkpoints.

A job is created in ``validating_files``; a worker (:mod:`.worker`) takes it from there. Its
``model`` is an allow-listed base model or, for continued fine-tuning, an ``ft:`` model the
project may use (:class:`.access.ModelAccess`: its own, or a checkpoint shared with it). Cancel,
pause and resume are idempotent; an impossible transition is a 400 (never retried).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import NamedTuple

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from ..serve.protocol import APIError
from . import ids
from .bodies import read_json
from .errors import job_not_found, require
from .objects import base_name, checkpoint_object, event_object, job_object, page, paged, parse_limit
from .service import Service, project, service
from .spec import normalise_create
from .store import TERMINAL, now

router = APIRouter()
METHOD_NAMES = {"dpo": "dpo", "reinforcement": "grpo"}  # job method type -> tunesmith method it needs


@router.post("/v1/fine_tuning/jobs")
async def create_job(request: Request, proj: dict = Depends(project), svc: Service = Depends(service)):
    spec = normalise_create(await read_json(request))
    parent = await run_in_threadpool(accept_create, svc, proj, spec)
    seed = spec["seed"] if spec["seed"] is not None else secrets.randbelow(2**31)
    jid = ids.job_id()
    row = svc.store.add_job(
        {
            "id": jid,
            "project_id": proj["id"],
            "created_at": now(),
            "model": spec["model"],
            "training_file": spec["training_file"],
            "validation_file": spec["validation_file"],
            "suffix": spec["suffix"],
            "seed": seed,
            "status": "validating_files",
            "error": None,
            "model_key": ids.model_key(),
            "method": spec["method"],
            "metadata": spec["metadata"],
            "integrations": spec["integrations"],
            "result_files": [],
            "model_deleted": False,
            "last_step": 0,
            "attempts": 0,
            "parent_job_id": parent[0]["id"] if parent else None,
            "parent_step": parent[1] if parent else None,
        }
    )
    svc.store.add_event(jid, f"Created fine-tuning job: {jid}")
    text = f"Validating training file: {spec['training_file']}"
    if spec["validation_file"]:
        text += f" and validation file: {spec['validation_file']}"
    svc.store.add_event(jid, text)
    return job_object(row)


def accept_create(svc: Service, proj: dict, spec: dict) -> tuple[dict, int | None] | None:
    """Every check of a normalised create body (:func:`.spec.normalise_create`) that needs the
    server: the model (:func:`_parent`, whose answer it returns), the method being available,
    a reinforcement grader runnable here, the files. Blocking. The dashboard's preflight
    (:mod:`.preflight`) applies the same, so what it accepts the create accepts."""
    parent = _parent(svc, proj, spec["model"])
    kind = spec["method"]["type"]
    if kind in METHOD_NAMES:
        from ..config.registry import METHODS

        if METHOD_NAMES[kind] not in METHODS:
            raise APIError(400, f"Method '{kind}' is not available on this server.", param="method.type")
    if kind == "reinforcement":
        from .rft_graders import check_grader_here

        check_grader_here(
            spec["method"]["reinforcement"]["grader"], svc.settings, "method.reinforcement.grader"
        )
    for param in ("training_file", "validation_file"):
        _check_file(svc, proj, param, spec[param])
    return parent


def _check_file(svc: Service, proj: dict, param: str, fid: str | None) -> None:
    """A job's ``training_file`` / ``validation_file`` (``param``) exists and is for fine-tuning."""
    if fid is None:
        return
    row = svc.store.get_file(proj["id"], fid)
    if row is None:
        raise APIError(400, f"invalid {param}: {fid}", param=param, code="file_not_found")
    if row["purpose"] != "fine-tune":
        raise APIError(
            400,
            f"File {fid} has purpose '{row['purpose']}'; fine-tuning requires purpose 'fine-tune'.",
            param=param,
            code="invalid_file_purpose",
        )


def _unavailable(model: str) -> APIError:
    return APIError(
        400,
        f"Model {model} is not available for fine-tuning or does not exist.",
        param="model",
        code="model_not_available",
    )


def _parent(svc: Service, proj: dict, model: str) -> tuple[dict, int | None] | None:
    """None for an allow-listed base model; for continued fine-tuning of an ``ft:`` model
    (the project's own, or a checkpoint shared with it) the job that made it and the
    checkpoint step (None: its final model), once its adapter folder is known to exist (a
    checkpoint is exported as one now, so later rotation or the owner's deletion of the
    model cannot take it away from the queued job). Anything else is the same 400 whether
    it does not exist or belongs to another project. Blocking."""
    if model in svc.settings.base_models:
        return None
    if not model.startswith("ft:"):
        raise _unavailable(model)
    try:
        row, step = svc.access.usable(proj["id"], model)
        folder = svc.inference.locate(row, step)
    except APIError:
        raise _unavailable(model) from None
    if base_name(row) not in svc.settings.base_models:
        raise _unavailable(model)
    if not (folder / "adapter_config.json").is_file():
        raise APIError(
            400,
            f"Model {model} was fully fine-tuned (no adapter); continued fine-tuning "
            "starts from an adapter model.",
            param="model",
            code="model_not_available",
        )
    return row, step


@router.get("/v1/fine_tuning/jobs")
def list_jobs(
    request: Request,
    after: str | None = None,
    limit: str | None = None,
    proj: dict = Depends(project),
    svc: Service = Depends(service),
):
    n = parse_limit(limit, 20)
    meta = {
        k[len("metadata[") : -1]: v
        for k, v in request.query_params.items()
        if k.startswith("metadata[") and k.endswith("]")
    }
    rows, more = paged(
        lambda: svc.store.list_jobs(proj["id"], after=after, limit=n, metadata_filter=meta), after
    )
    return page([job_object(r) for r in rows], more)


def _job(svc: Service, proj: dict, job_id: str) -> dict:
    return require(svc.store.get_job(proj["id"], job_id), job_not_found(job_id))


@router.get("/v1/fine_tuning/jobs/{job_id}")
def retrieve_job(job_id: str, proj: dict = Depends(project), svc: Service = Depends(service)):
    return job_object(_job(svc, proj, job_id))


class Transition(NamedTuple):
    """A status change a client may ask for: to ``target`` (a status, or a function of the job
    row) from a status in ``allowed``; a job already in ``same`` is returned unchanged."""

    target: str | Callable[[dict], str]
    allowed: tuple[str, ...]
    same: tuple[str, ...]
    event: str  # the job event it adds
    verb: str  # "Job … cannot be <verb>"


CANCEL = Transition(
    "cancelled",
    ("validating_files", "queued", "running", "paused"),
    ("cancelled",),
    "Fine-tuning job cancelled",
    "cancelled",
)
PAUSE = Transition(
    "paused", ("validating_files", "queued", "running"), ("paused",), "Fine-tuning job paused", "paused"
)
RESUME = Transition(  # a job paused before its files were validated goes back to validation
    lambda r: "queued" if r["n_examples"] is not None else "validating_files",
    ("paused",),
    ("validating_files", "queued", "running"),
    "Fine-tuning job resumed",
    "resumed",
)


def _transition(svc: Service, proj: dict, job_id: str, move: Transition) -> dict:
    """Apply ``move`` to the job: idempotent for a job already there; anything else not in
    ``move.allowed`` is a 400 (never retried)."""
    for _ in range(3):  # re-read if a worker changed the status between read and update
        row = _job(svc, proj, job_id)
        if row["status"] in move.same:
            return job_object(row)
        if row["status"] not in move.allowed:
            raise APIError(
                400,
                f"Job {job_id} cannot be {move.verb}: its status is '{row['status']}'.",
                param="fine_tuning_job_id",
                code="invalid_job_status",
            )
        values = {"status": move.target(row) if callable(move.target) else move.target}
        if values["status"] in TERMINAL:
            values["finished_at"] = now()
        updated = svc.store.update_job(job_id, expect_status=(row["status"],), **values)
        if updated is not None:
            svc.store.add_event(job_id, move.event)
            return job_object(updated)
    raise APIError(409, "The job changed while it was being updated; try again.")


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel")
def cancel_job(job_id: str, proj: dict = Depends(project), svc: Service = Depends(service)):
    return _transition(svc, proj, job_id, CANCEL)


@router.post("/v1/fine_tuning/jobs/{job_id}/pause")
def pause_job(job_id: str, proj: dict = Depends(project), svc: Service = Depends(service)):
    return _transition(svc, proj, job_id, PAUSE)


@router.post("/v1/fine_tuning/jobs/{job_id}/resume")
def resume_job(job_id: str, proj: dict = Depends(project), svc: Service = Depends(service)):
    return _transition(svc, proj, job_id, RESUME)


@router.get("/v1/fine_tuning/jobs/{job_id}/events")
def list_events(
    job_id: str,
    after: str | None = None,
    limit: str | None = None,
    proj: dict = Depends(project),
    svc: Service = Depends(service),
):
    return _job_page(svc, proj, job_id, after, (limit, 20), svc.store.list_events, event_object)


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
def list_checkpoints(
    job_id: str,
    after: str | None = None,
    limit: str | None = None,
    proj: dict = Depends(project),
    svc: Service = Depends(service),
):
    listing = svc.store.list_checkpoints
    return _job_page(svc, proj, job_id, after, (limit, 10), listing, checkpoint_object, with_ids=True)


def _job_page(svc: Service, proj: dict, job_id: str, after, limit: tuple, listing, to_object, **kw) -> dict:
    """A page of the caller's job ``job_id``'s objects from the store's ``listing``; ``limit`` is
    (the query's value, its default). The job is looked up first: another project's job is a 404
    whatever the other parameters say."""
    _job(svc, proj, job_id)
    n = parse_limit(*limit)
    rows, more = paged(lambda: listing(job_id, after=after, limit=n), after)
    return page([to_object(r) for r in rows], more, **kw)
