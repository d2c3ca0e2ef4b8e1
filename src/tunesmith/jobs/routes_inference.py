"""``/v1/chat/completions`` and ``/v1/completions`` for base, ``ft:`` and checkpoint models,
answered by :mod:`tunesmith.serve` through :class:`.infer.Inference` (batching, streaming, usage).

The caller's project is checked here, before serve sees the request: an ``ft:`` model must be
one the project may use (:class:`.access.ModelAccess`), else the same 404 as a missing one.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from ..errors import TunesmithError
from ..serve import handlers
from ..serve.handlers import answer
from ..serve.protocol import APIError
from .bodies import read_json
from .errors import model_not_found
from .objects import base_name
from .service import Service, project, service

router = APIRouter()


def _served(svc: Service, proj: dict, model) -> tuple:
    """(base name, served model id or None for the base, adapter folder or None); blocking."""
    if not isinstance(model, str) or not model:
        raise APIError(400, "Missing required parameter: 'model'.", param="model")
    if model in svc.settings.base_models:
        return model, None, None
    if model.startswith("tinker://") and svc.tinker is not None:
        # A checkpoint of the Tinker API (docs/tinker.md), the caller's own: its PEFT folder.
        try:
            tp, folder = svc.tinker.store.resolve(proj["id"], model)
            return svc.tinker.store.read_run(proj["id"], tp.run_id)["base_model"], model, folder
        except TunesmithError:
            raise model_not_found(model) from None
    row, step = svc.access.usable(proj["id"], model)
    return base_name(row), model, svc.inference.locate(row, step)


async def _infer(request: Request, svc: Service, proj: dict, handler):
    """``request`` answered by serve's ``handler`` on the server of the model it names."""
    # The bytes stay cached: serve's handler reads the same body. NUL may appear in chat text,
    # which reaches the model, not the database (an ft: model id is parsed before any lookup).
    body = await read_json(request, allow_nul=True)
    target = await run_in_threadpool(_served, svc, proj, body.get("model"))
    base = await run_in_threadpool(svc.inference.ensure, *target)
    return await answer(request, handler, base.server, request)  # no key: the caller is authenticated


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, proj: dict = Depends(project), svc: Service = Depends(service)):
    return await _infer(request, svc, proj, handlers.chat_completions)


@router.post("/v1/completions")
async def completions(request: Request, proj: dict = Depends(project), svc: Service = Depends(service)):
    return await _infer(request, svc, proj, handlers.completions)
