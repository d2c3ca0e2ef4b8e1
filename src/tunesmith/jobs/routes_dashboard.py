"""The web dashboard (``/`` and its ``/static/`` files, shipped in ``jobs/static``), ``/healthz``,
and the two ``/v1/dashboard`` routes only the dashboard needs.

No key is needed to load the page: the dashboard asks for one and calls the ``/v1`` API with it,
as the SDK would (files, jobs, events, checkpoints, models, chat completions, graders). Beyond
OpenAI's API it uses, with the same key and project scoping:

* ``POST /v1/dashboard/preflight`` — a create-job body in; the data check of its files, its
  hyperparameters with "auto" resolved and the memory / time estimate out (:mod:`.preflight`);
* ``GET /v1/dashboard/jobs/{job_id}/report`` — the HTML evaluation report a finished run wrote
  (``RUN/report.html``), without server paths, or 404.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from ..serve.protocol import APIError
from .bodies import read_json
from .errors import job_not_found, require
from .preflight import preflight
from .redact import SERVER_PATH, public_text
from .routes_jobs import accept_create
from .service import Service, project, service

STATIC = Path(__file__).parent / "static"
MEDIA = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}
# The report is shown in a sandboxed frame: it may use inline styles and data: images, nothing else.
REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox"
_DATA_URI = re.compile(r"(data:[^\"'\s)]*)")
router = APIRouter()


@router.get("/", include_in_schema=False)
def dashboard():
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/static/{name}", include_in_schema=False)
def static(name: str):
    allowed = {p.name: p for p in STATIC.iterdir() if p.is_file()}
    if name not in allowed:  # a fixed set of shipped files; the name never builds a path
        raise APIError(404, "Invalid URL")
    return FileResponse(allowed[name], media_type=MEDIA.get(allowed[name].suffix, "text/plain"))


@router.get("/healthz", include_in_schema=False)
def health():
    return Response("ok")


@router.post("/v1/dashboard/preflight", include_in_schema=False)
async def preflight_route(request: Request, proj: dict = Depends(project), svc: Service = Depends(service)):
    body = await read_json(request)
    return await run_in_threadpool(preflight, svc, proj, body, accept_create)


@router.get("/v1/dashboard/jobs/{job_id}/report", include_in_schema=False)
def job_report(job_id: str, proj: dict = Depends(project), svc: Service = Depends(service)):
    job = require(svc.store.get_job(proj["id"], job_id), job_not_found(job_id))
    path = svc.settings.run_dir(job["id"]) / "report.html"
    if not path.is_file():
        raise APIError(404, f"Job {job_id} has no evaluation report (yet): a run writes one when it ends.")
    text = path.read_text(encoding="utf-8", errors="replace")
    names = {folder: f"model {name}" for name, folder in svc.settings.base_models.items()}
    names[svc.settings.run_dir(job["id"])] = f"job {job['id']}"
    # Paths become public names; base64 images (data: URIs hold '/') are left as they are.
    parts = _DATA_URI.split(text)
    text = "".join(p if i % 2 else public_text(p, names) for i, p in enumerate(parts))
    text = text.replace(SERVER_PATH, html.escape(SERVER_PATH))  # shown, not parsed as a tag
    return Response(text, media_type="text/html", headers={"Content-Security-Policy": REPORT_CSP})
