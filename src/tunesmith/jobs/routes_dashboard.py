"""The web dashboard (``/`` and its ``/static/`` files, shipped in ``jobs/static``) and ``/healthz``.

No key is needed to load the page: the dashboard asks for one and calls the ``/v1`` API with it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from ..serve.protocol import APIError

STATIC = Path(__file__).parent / "static"
router = APIRouter()


@router.get("/", include_in_schema=False)
def dashboard():
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/static/{name}", include_in_schema=False)
def static(name: str):
    allowed = {p.name: p for p in STATIC.iterdir() if p.is_file()}
    if name not in allowed:  # a fixed set of shipped files; the name never builds a path
        raise APIError(404, "Invalid URL")
    media = {".js": "text/javascript", ".css": "text/css"}.get(allowed[name].suffix, "text/plain")
    return FileResponse(allowed[name], media_type=media)


@router.get("/healthz", include_in_schema=False)
def health():
    return Response("ok")
