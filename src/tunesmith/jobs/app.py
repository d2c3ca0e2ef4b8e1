"""The FastAPI app: OpenAI's files, fine-tuning jobs and models API, inference, the dashboard.

Every ``/v1`` route needs ``Authorization: Bearer <key>``; the key names the project and every
lookup is scoped to it (another project's object answers exactly like a missing one). Errors use
OpenAI's envelope (:mod:`.errors`). Checkpoint permissions (:mod:`.permissions`) let another
project use a checkpoint model, and ``model="ft:…"`` continues fine-tuning from one
(:mod:`.access`). Reinforcement jobs and the grader routes are in :mod:`.rft_graders`. The app never trains: workers (:mod:`.worker`) do, in
subprocesses. A background thread moves running jobs whose worker stopped heartbeating back to
``queued`` so that another worker resumes them, deletes expired files and removes uploads
abandoned in ``files/.incoming`` by a server that died (:meth:`.blobs.BlobStore.sweep_incoming`).

Hostile input is answered in the envelope, never with a 5xx (docs/hardening.md): JSON bodies
are read by :func:`.bodies.read_json` alone, uploads by :func:`.blobs.receive_upload`, and any
exception that still escapes a route is a logged 500 in the envelope (:class:`.errors.LastResort`).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from . import ids
from .access import ModelAccess
from .blobs import BadUpload, BlobStore, Upload, UploadTooLarge, receive_upload
from .bodies import read_json, refuse_nul_in_url
from .errors import APIError, LastResort, file_not_found, job_not_found
from .objects import base_name, checkpoint_object, event_object, file_object, job_object, model_object, page
from .objects import paged as _paged
from .objects import parse_limit as _limit
from .settings import Settings
from .spec import normalise_create
from .store import TERMINAL, Store, now

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
STATIC = Path(__file__).parent / "static"


def create_app(settings: Settings, store: Store | None = None) -> FastAPI:
    store = store or Store(settings.db)
    blobs = BlobStore(settings.files_dir)
    stop = threading.Event()

    def reaper() -> None:
        while not stop.wait(max(0.5, settings.stale_after / 3)):
            with contextlib.suppress(Exception):  # the database may be briefly unavailable
                store.requeue_stale(settings.stale_after)
            with contextlib.suppress(Exception):
                blobs.sweep_expired(store)
            with contextlib.suppress(OSError):
                blobs.sweep_incoming()

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        blobs.sweep_incoming()  # what a previous server left mid-upload (old enough to be dead)
        thread = threading.Thread(target=reaper, name="tunesmith-reaper", daemon=True)
        thread.start()
        yield
        stop.set()
        app.state.inference.close()

    app = FastAPI(
        title="tunesmith fine-tuning API",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(refuse_nul_in_url)],
    )
    app.state.store, app.state.settings, app.state.blobs = store, settings, blobs
    app.add_middleware(LastResort)
    access = ModelAccess(store, settings.owner)

    @app.exception_handler(APIError)
    async def _api_error(_request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(x) for x in first.get("loc", []) if x not in ("body", "query", "path")]
        err = APIError(
            400, f"Invalid request: {first.get('msg', 'malformed body')}", param=".".join(loc) or None
        )
        return JSONResponse(err.body(), status_code=400, headers=err.headers())

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request, exc: StarletteHTTPException):
        message = "Invalid URL" if exc.status_code == 404 else str(exc.detail)
        err = APIError(exc.status_code, message)
        return JSONResponse(err.body(), status_code=exc.status_code, headers=err.headers())

    def project(request: Request) -> dict:
        auth = request.headers.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise APIError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code="invalid_api_key",
            )
        found = store.project_for_key(key.strip())
        if found is None:
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")
        return found

    # -- files ------------------------------------------------------------------------------------
    def _too_large() -> APIError:
        return APIError(
            413,
            f"File is too large: the limit is {settings.max_upload_bytes} bytes.",
            param="file",
            code="file_too_large",
        )

    async def _receive(request: Request, tmp: Path) -> Upload:
        """The parsed upload (file part at ``tmp``); every client failure as an APIError."""
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_upload_bytes + 64 * 1024:
            raise _too_large()
        try:
            return await receive_upload(
                request.stream(), request.headers.get("content-type", ""), tmp, settings.max_upload_bytes
            )
        except UploadTooLarge:
            raise _too_large() from None
        except BadUpload as exc:
            raise APIError(400, f"Invalid upload: {exc}.", param="file") from None
        except ClientDisconnect:  # nobody reads this answer; it only ends the request quietly
            raise APIError(
                400, "The client disconnected before the upload was complete.", param="file"
            ) from None

    @app.post("/v1/files")
    async def upload_file(request: Request, proj: dict = Depends(project)):
        fid = ids.file_id()
        tmp = blobs.incoming(fid)
        try:  # whatever happens, nothing is left in .incoming, and a blob only with its row
            up = await _receive(request, tmp)
            purpose, created = _purpose(up.fields), now()
            expires_at = _expiry(up.fields, created)
            blobs.commit(tmp, fid)
            try:
                row = store.add_file(
                    {
                        "id": fid,
                        "project_id": proj["id"],
                        "bytes": up.size,
                        "created_at": created,
                        "expires_at": expires_at,
                        "filename": ids.clean_filename(up.filename or ""),
                        "purpose": purpose,
                        "status": "processed",
                        "status_details": None,
                    }
                )
            except BaseException:
                blobs.delete(fid)
                raise
        finally:
            tmp.unlink(missing_ok=True)
        return file_object(row)

    @app.get("/v1/files")
    def list_files(
        after: str | None = None,
        limit: str | None = None,
        order: str = "desc",
        purpose: str | None = None,
        proj: dict = Depends(project),
    ):
        if order not in ("asc", "desc"):
            raise APIError(400, f"Invalid order: {order!r}. Expected 'asc' or 'desc'.", param="order")
        n = _limit(limit, 10000)
        rows, more = _paged(
            lambda: store.list_files(
                proj["id"], after=after, limit=n, ascending=order == "asc", purpose=purpose
            ),
            after,
        )
        return page([file_object(r) for r in rows], more, with_ids=True)

    def _file(proj: dict, file_id: str) -> dict:
        row = store.get_file(proj["id"], file_id)
        if row is None:
            raise file_not_found(file_id)
        return row

    @app.get("/v1/files/{file_id}")
    def retrieve_file(file_id: str, proj: dict = Depends(project)):
        return file_object(_file(proj, file_id))

    @app.delete("/v1/files/{file_id}")
    def delete_file(file_id: str, proj: dict = Depends(project)):
        _file(proj, file_id)
        store.delete_file(proj["id"], file_id)
        blobs.delete(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    @app.get("/v1/files/{file_id}/content")
    def file_content(file_id: str, proj: dict = Depends(project)):
        row = _file(proj, file_id)
        path = blobs.path(row["id"])
        if not path.is_file():
            raise file_not_found(file_id)
        media = "text/csv" if row["purpose"] == "fine-tune-results" else "application/octet-stream"
        return FileResponse(path, media_type=media)

    # -- fine-tuning jobs -----------------------------------------------------------------------------
    @app.post("/v1/fine_tuning/jobs")
    async def create_job(request: Request, proj: dict = Depends(project)):
        spec = normalise_create(await read_json(request))
        parent = await _run_sync(_parent, proj, spec["model"])
        if spec["method"]["type"] in ("dpo", "reinforcement"):
            from ..methods import METHODS

            if {"dpo": "dpo", "reinforcement": "grpo"}[spec["method"]["type"]] not in METHODS:
                raise APIError(
                    400,
                    f"Method '{spec['method']['type']}' is not available on this server.",
                    param="method.type",
                )
        if spec["method"]["type"] == "reinforcement":
            from .rft_graders import check_grader_here

            await _run_sync(
                check_grader_here,
                spec["method"]["reinforcement"]["grader"],
                settings,
                "method.reinforcement.grader",
            )
        for param in ("training_file", "validation_file"):
            fid = spec[param]
            if fid is None:
                continue
            row = store.get_file(proj["id"], fid)
            if row is None:
                raise APIError(400, f"invalid {param}: {fid}", param=param, code="file_not_found")
            if row["purpose"] != "fine-tune":
                raise APIError(
                    400,
                    f"File {fid} has purpose '{row['purpose']}'; fine-tuning requires purpose 'fine-tune'.",
                    param=param,
                    code="invalid_file_purpose",
                )
        seed = spec["seed"] if spec["seed"] is not None else secrets.randbelow(2**31)
        jid = ids.job_id()
        row = store.add_job(
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
        store.add_event(jid, f"Created fine-tuning job: {jid}")
        text = f"Validating training file: {spec['training_file']}"
        if spec["validation_file"]:
            text += f" and validation file: {spec['validation_file']}"
        store.add_event(jid, text)
        return job_object(row)

    def _unavailable(model: str) -> APIError:
        return APIError(
            400,
            f"Model {model} is not available for fine-tuning or does not exist.",
            param="model",
            code="model_not_available",
        )

    def _parent(proj: dict, model: str) -> tuple[dict, int | None] | None:
        """None for an allow-listed base model; for continued fine-tuning of an ``ft:`` model
        (the project's own, or a checkpoint shared with it) the job that made it and the
        checkpoint step (None: its final model), once its adapter folder is known to exist (a
        checkpoint is exported as one now, so later rotation or the owner's deletion of the
        model cannot take it away from the queued job). Anything else is the same 400 whether
        it does not exist or belongs to another project. Blocking."""
        if model in settings.base_models:
            return None
        if not model.startswith("ft:"):
            raise _unavailable(model)
        try:
            row, step = access.usable(proj["id"], model)
            folder = inference.locate(row, step)
        except APIError:
            raise _unavailable(model) from None
        if base_name(row) not in settings.base_models:
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

    @app.get("/v1/fine_tuning/jobs")
    def list_jobs(
        request: Request, after: str | None = None, limit: str | None = None, proj: dict = Depends(project)
    ):
        n = _limit(limit, 20)
        meta = {
            k[len("metadata[") : -1]: v
            for k, v in request.query_params.items()
            if k.startswith("metadata[") and k.endswith("]")
        }
        rows, more = _paged(
            lambda: store.list_jobs(proj["id"], after=after, limit=n, metadata_filter=meta), after
        )
        return page([job_object(r) for r in rows], more)

    def _job(proj: dict, job_id: str) -> dict:
        row = store.get_job(proj["id"], job_id)
        if row is None:
            raise job_not_found(job_id)
        return row

    @app.get("/v1/fine_tuning/jobs/{job_id}")
    def retrieve_job(job_id: str, proj: dict = Depends(project)):
        return job_object(_job(proj, job_id))

    def _transition(proj, job_id, target, allowed, same, message, **extra):
        """Move a job to ``target`` if its status is in ``allowed``; a job already in one of
        ``same`` is returned unchanged (idempotent); anything else is a 400 (never retried)."""
        for _ in range(3):  # re-read if a worker changed the status between read and update
            row = _job(proj, job_id)
            if row["status"] in same:
                return job_object(row)
            if row["status"] not in allowed:
                raise APIError(
                    400,
                    f"Job {job_id} cannot be {message[1]}: its status is '{row['status']}'.",
                    param="fine_tuning_job_id",
                    code="invalid_job_status",
                )
            values = dict(status=target(row) if callable(target) else target, **extra)
            if values["status"] in TERMINAL:
                values["finished_at"] = now()
            updated = store.update_job(job_id, expect_status=(row["status"],), **values)
            if updated is not None:
                store.add_event(job_id, message[0])
                return job_object(updated)
        raise APIError(409, "The job changed while it was being updated; try again.")

    @app.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    def cancel_job(job_id: str, proj: dict = Depends(project)):
        return _transition(
            proj,
            job_id,
            "cancelled",
            ("validating_files", "queued", "running", "paused"),
            ("cancelled",),
            ("Fine-tuning job cancelled", "cancelled"),
        )

    @app.post("/v1/fine_tuning/jobs/{job_id}/pause")
    def pause_job(job_id: str, proj: dict = Depends(project)):
        return _transition(
            proj,
            job_id,
            "paused",
            ("validating_files", "queued", "running"),
            ("paused",),
            ("Fine-tuning job paused", "paused"),
        )

    @app.post("/v1/fine_tuning/jobs/{job_id}/resume")
    def resume_job(job_id: str, proj: dict = Depends(project)):
        # A job paused before its files were validated goes back to validation.
        return _transition(
            proj,
            job_id,
            lambda r: "queued" if r["n_examples"] is not None else "validating_files",
            ("paused",),
            ("validating_files", "queued", "running"),
            ("Fine-tuning job resumed", "resumed"),
        )

    @app.get("/v1/fine_tuning/jobs/{job_id}/events")
    def list_events(
        job_id: str, after: str | None = None, limit: str | None = None, proj: dict = Depends(project)
    ):
        _job(proj, job_id)
        n = _limit(limit, 20)
        rows, more = _paged(lambda: store.list_events(job_id, after=after, limit=n), after)
        return page([event_object(r) for r in rows], more)

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    def list_checkpoints(
        job_id: str, after: str | None = None, limit: str | None = None, proj: dict = Depends(project)
    ):
        _job(proj, job_id)
        n = _limit(limit, 10)
        rows, more = _paged(lambda: store.list_checkpoints(job_id, after=after, limit=n), after)
        return page([checkpoint_object(r) for r in rows], more, with_ids=True)

    from .permissions import add_permission_routes
    from .rft_graders import add_grader_routes

    add_permission_routes(app, store, access, project)
    add_grader_routes(app, settings, project)

    # -- models -----------------------------------------------------------------------------------------
    @app.get("/v1/models")
    def list_models(proj: dict = Depends(project)):
        data = [model_object(name, 0, "system") for name in sorted(settings.base_models)]
        data += [
            access.model_object(r["fine_tuned_model"], r, None) for r in store.list_model_jobs(proj["id"])
        ]
        # checkpoints other projects shared with this one (P1): listed under their owner
        data += [access.model_object(ckpt, r, step) for ckpt, r, step in access.shared_with(proj["id"])]
        return {"object": "list", "data": data}

    @app.get("/v1/models/{model:path}")
    def retrieve_model(model: str, proj: dict = Depends(project)):
        if model in settings.base_models:
            return model_object(model, 0, "system")
        row, step = access.usable(proj["id"], model)
        return access.model_object(model, row, step)

    @app.delete("/v1/models/{model:path}")
    def delete_model(model: str, proj: dict = Depends(project)):
        if model in settings.base_models:
            raise APIError(
                403,
                "You do not have permission to delete this model.",
                param="model",
                code="model_not_deletable",
            )
        row, step = access.own(proj["id"], model)  # a shared checkpoint is not the grantee's to delete
        if step is not None:
            raise APIError(
                400,
                "Checkpoint models cannot be deleted on their own; delete the fine-tuned model.",
                param="model",
            )
        store.update_job(row["id"], model_deleted=True)
        inference.forget(model)  # stop serving it (and its checkpoints) on this server at once
        return {"id": model, "object": "model", "deleted": True}

    # -- inference (tunesmith.serve: batching, streaming, usage) ----------------------------------------
    from .infer import Inference

    inference = Inference(settings, store)
    app.state.inference = inference

    def _served(proj: dict, model) -> tuple:
        """(base name, served model id or None for the base, adapter folder or None); blocking."""
        if not isinstance(model, str) or not model:
            raise APIError(400, "Missing required parameter: 'model'.", param="model")
        if model in settings.base_models:
            return model, None, None
        row, step = access.usable(proj["id"], model)
        return base_name(row), model, inference.locate(row, step)

    async def _infer(request: Request, proj: dict, path: str):
        # The bytes stay cached: serve's route reads the same body. NUL may appear in chat text,
        # which reaches the model, not the database (an ft: model id is parsed before any lookup).
        body = await read_json(request, allow_nul=True)
        target = await _run_sync(_served, proj, body.get("model"))
        base = await _run_sync(inference.ensure, *target)
        return await inference.dispatch(request, path, base)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, proj: dict = Depends(project)):
        return await _infer(request, proj, "/v1/chat/completions")

    @app.post("/v1/completions")
    async def completions(request: Request, proj: dict = Depends(project)):
        return await _infer(request, proj, "/v1/completions")

    # -- dashboard --------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def dashboard():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        allowed = {p.name: p for p in STATIC.iterdir() if p.is_file()}
        if name not in allowed:  # a fixed set of shipped files; the name never builds a path
            raise APIError(404, "Invalid URL")
        media = {".js": "text/javascript", ".css": "text/css"}.get(allowed[name].suffix, "text/plain")
        return FileResponse(allowed[name], media_type=media)

    @app.get("/healthz", include_in_schema=False)
    def health():
        return Response("ok")

    return app


async def _run_sync(fn, *args):
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


def _purpose(fields: dict) -> str:
    purpose = fields.get("purpose")
    if purpose not in UPLOAD_PURPOSES:
        shown = purpose if purpose is None else purpose[:100]
        raise APIError(
            400, f"Invalid purpose: {shown!r}. Expected one of {', '.join(UPLOAD_PURPOSES)}.", param="purpose"
        )
    return purpose


def _expiry(fields: dict, created: int) -> int | None:
    anchor, seconds = fields.get("expires_after[anchor]"), fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    try:
        value = int(seconds or "")
    except ValueError:
        value = -1
    if anchor != "created_at" or not 3600 <= value <= 2592000:
        raise APIError(
            400,
            "Invalid expires_after: anchor must be 'created_at' and seconds between 3600 and 2592000.",
            param="expires_after",
        )
    return created + value
