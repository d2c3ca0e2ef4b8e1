"""The FastAPI app: OpenAI's files, fine-tuning jobs and models API, inference, the dashboard.

:func:`create_app` builds the server's state (:class:`.service.Service`) and includes the route
modules: :mod:`.routes_files`, :mod:`.routes_jobs`, :mod:`.routes_permissions` (checkpoint
permissions, admin keys), :mod:`.routes_graders`, :mod:`.routes_models`, :mod:`.routes_inference`
and :mod:`.routes_dashboard`. Every ``/v1`` route needs ``Authorization: Bearer <key>``; the key
names the project and every lookup is scoped to it (another project's object answers exactly
like a missing one). Errors use OpenAI's envelope (:mod:`.errors`). The app never trains: workers
(:mod:`.worker`) do, in subprocesses. A background thread moves running jobs whose worker stopped
heartbeating back to ``queued`` so that another worker resumes them, deletes expired files and
removes uploads abandoned in ``files/.incoming`` by a server that died
(:meth:`.blobs.BlobStore.sweep_incoming`).

Hostile input is answered in the envelope, never with a 5xx (docs/hardening.md): JSON bodies
are read by :func:`.bodies.read_json` alone, uploads by :func:`.blobs.receive_upload`, and any
exception that still escapes a route is a logged 500 in the envelope (:class:`.errors.LastResort`).
"""

from __future__ import annotations

import contextlib
import threading

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..serve.protocol import APIError
from . import (
    routes_dashboard,
    routes_files,
    routes_graders,
    routes_inference,
    routes_jobs,
    routes_models,
    routes_permissions,
    routes_tinker,
)
from .bodies import refuse_nul_in_url
from .errors import LastResort
from .service import Service
from .settings import Settings, tinker_models
from .store import Store

ROUTERS = (  # in this order: the first route whose path and method match answers
    routes_files,
    routes_jobs,
    routes_permissions,
    routes_graders,
    routes_models,
    routes_inference,
    routes_tinker,
    routes_dashboard,
)


def create_app(settings: Settings, store: Store | None = None) -> FastAPI:
    """The jobs server's app over ``store`` (default: the one ``settings.db`` names). Its state
    is ``app.state.service``; ``app.state.inference`` is the service's :class:`.infer.Inference`
    (one serve InferenceServer per base model), closed when the app stops."""
    svc = Service.build(settings, store)
    app = FastAPI(
        title="tunesmith fine-tuning API",
        lifespan=_lifespan(svc),
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(refuse_nul_in_url)],
    )
    app.state.service = svc
    app.state.inference = svc.inference
    app.add_middleware(LastResort)
    _add_error_handlers(app)
    for module in ROUTERS:
        app.include_router(module.router)
    _add_tinker(app, settings)
    return app


def _add_tinker(app: FastAPI, settings: Settings) -> None:
    """State of the Tinker-compatible API (``/api/v1``, :mod:`.routes_tinker`), over this
    server's keys: ``service.tinker`` is a :class:`~tunesmith.tinker.host.TinkerHost` when
    Tinker base models are registered, else None (its routes then answer 404 "not enabled")."""
    models = tinker_models(settings)
    if models:
        from ..tinker.host import TinkerHost
        from ..tinker.store import CheckpointStore

        app.state.service.tinker = TinkerHost(models, CheckpointStore(settings.data_dir / "tinker"))


def _lifespan(svc: Service):
    """Sweep what a previous server left mid-upload, run the reaper while the app runs, then stop
    it and close the inference servers."""

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        svc.blobs.sweep_incoming()  # what a previous server left mid-upload (old enough to be dead)
        stop = threading.Event()
        thread = threading.Thread(target=_reaper, args=(svc, stop), name="tunesmith-reaper", daemon=True)
        thread.start()
        yield
        stop.set()
        svc.inference.close()
        if svc.tinker is not None:
            svc.tinker.close()

    return lifespan


def _reaper(svc: Service, stop: threading.Event) -> None:
    """Every ``stale_after / 3`` seconds (at least 0.5): requeue jobs of dead workers, delete
    expired files and abandoned uploads."""
    while not stop.wait(max(0.5, svc.settings.stale_after / 3)):
        with contextlib.suppress(Exception):  # the database may be briefly unavailable
            svc.store.requeue_stale(svc.settings.stale_after)
        with contextlib.suppress(Exception):
            svc.blobs.sweep_expired(svc.store)
        with contextlib.suppress(OSError):
            svc.blobs.sweep_incoming()


def _add_error_handlers(app: FastAPI) -> None:
    """APIError, request validation and routing errors (404, 405 …) in OpenAI's envelope."""

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
