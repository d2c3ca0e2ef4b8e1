"""The OpenAI-compatible HTTP layer (FastAPI) over an :class:`InferenceServer`.

Endpoints: ``GET /health``, ``GET /v1/models``, ``GET /v1/models/{id}``,
``POST /v1/chat/completions``, ``POST /v1/completions`` (both streaming with server-sent events
and non-streaming), and, when an ``adapter_root`` is configured, ``POST /v1/adapters``
``{"id", "path"}`` / ``DELETE /v1/adapters/{id}`` to load/unload adapters found under that root.
Each route is a handler of :mod:`.handlers` (plain functions, also called by the jobs service)
answered through :func:`.handlers.answer`, which checks the API key and the error contract.

Reuse from another app: ``build_router(server, api_key=...)`` returns an ``APIRouter`` that
answers errors itself (OpenAI envelope), so it can be included anywhere
(``app.include_router(build_router(server))``); ``create_app`` wraps it in a FastAPI app.

Error contract (docs/hardening.md, :mod:`.handlers`): every answer is JSON in OpenAI's envelope;
routing errors (unknown route, wrong method) too.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request

from . import handlers
from .handlers import answer, error_response, internal_error
from .protocol import APIError


def build_router(server, *, api_key: str | None = None, adapter_root: str | None = None) -> APIRouter:
    """Routes for ``server`` (an InferenceServer); ``api_key`` guards everything but /health."""
    router = APIRouter()

    def route(path: str, method: str, handler, *extra, public: bool = False) -> None:
        key = None if public else api_key

        async def endpoint(request: Request):
            return await answer(request, handler, server, request, *extra, api_key=key)

        endpoint.__name__ = handler.__name__
        router.add_api_route(path, endpoint, methods=[method])

    route("/health", "GET", handlers.health, public=True)
    route("/v1/models", "GET", handlers.list_models)
    route("/v1/models/{model_id:path}", "GET", handlers.get_model)
    route("/v1/chat/completions", "POST", handlers.chat_completions)
    route("/v1/completions", "POST", handlers.completions)
    if adapter_root:
        route("/v1/adapters", "POST", handlers.add_adapter, adapter_root)
        route("/v1/adapters/{model_id:path}", "DELETE", handlers.delete_adapter)
    return router


def create_app(
    server, *, api_key: str | None = None, adapter_root: str | None = None, close_on_shutdown: bool = False
) -> FastAPI:
    """A FastAPI app serving ``server``. With ``close_on_shutdown`` the scheduler stops with the app."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        server.scheduler.start()
        yield
        if close_on_shutdown:
            server.close()

    app = FastAPI(title="tunesmith", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(build_router(server, api_key=api_key, adapter_root=adapter_root))

    from starlette.exceptions import HTTPException

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        """Routing errors (404 unknown route, 405 wrong method, ...) in the OpenAI envelope; a
        client's mistake, so ``invalid_request_error``."""
        if exc.status_code == 404:
            err = APIError(404, f"Unknown route {request.method} {request.url.path}", code="unknown_url")
        elif exc.status_code == 405:
            err = APIError(
                405, f"Method {request.method} not allowed on {request.url.path}", code="method_not_allowed"
            )
        else:
            err = APIError(
                exc.status_code,
                str(exc.detail),
                type="invalid_request_error" if exc.status_code < 500 else "server_error",
            )
        response = error_response(err)
        response.headers.update(getattr(exc, "headers", None) or {})
        return response

    @app.exception_handler(Exception)
    async def unexpected(request, exc):
        """Anything that escaped a route (the routes answer their own errors): a JSON 500."""
        return internal_error(f"{request.method} {request.url.path}", exc)

    return app
