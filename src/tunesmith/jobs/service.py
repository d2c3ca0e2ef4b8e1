"""What the jobs app's route modules share, and the FastAPI dependencies that hand it to them.

:class:`Service` holds the server's state (settings, store, blob store, model access, inference,
grader runner, the dashboard preflight's report cache); :func:`.app.create_app` builds one and keeps it as ``app.state.service``. A route
asks for it with ``svc: Service = Depends(service)`` and for the caller's project with
``proj: dict = Depends(project)`` (every ``/v1`` route: ``Authorization: Bearer <key>``; the key
names the project and every lookup is scoped to it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Depends, Request

from ..serve.protocol import APIError
from .access import ModelAccess
from .blobs import BlobStore
from .infer import Inference
from .preflight import FileChecks
from .rft_graders import GraderRunner
from .settings import Settings
from .store import Store


@dataclass
class Service:
    """The state of one jobs server (one per app; the routes never keep state of their own)."""

    settings: Settings
    store: Store
    blobs: BlobStore
    access: ModelAccess
    inference: Inference
    graders: GraderRunner
    preflight_cache: FileChecks = field(default_factory=FileChecks)
    """The dashboard preflight's file reports (:mod:`.preflight`)."""
    tinker: object = None
    """The Tinker-compatible API's :class:`~tunesmith.tinker.host.TinkerHost` (``/api/v1``,
    :mod:`.routes_tinker`) when Tinker base models are registered, else None."""

    @classmethod
    def build(cls, settings: Settings, store: Store | None = None) -> Service:
        store = store or Store(settings.db)
        return cls(
            settings=settings,
            store=store,
            blobs=BlobStore(settings.files_dir),
            access=ModelAccess(store, settings.owner),
            inference=Inference(settings, store),
            graders=GraderRunner(settings),
        )


def service(request: Request) -> Service:
    """Dependency: the app's :class:`Service`."""
    return request.app.state.service


def project(request: Request, svc: Service = Depends(service)) -> dict:
    """Dependency: the project of the request's API key (``{"id", "name", "admin"}``); 401 in
    OpenAI's wording for a missing, malformed, unknown or revoked key."""
    auth = request.headers.get("authorization", "")
    scheme, _, key = auth.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise APIError(
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            code="invalid_api_key",
        )
    found = svc.store.project_for_key(key.strip())
    if found is None:
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")
    return found
