"""OpenAI's grader routes, ``POST /v1/fine_tuning/alpha/graders/validate`` and ``…/run``: the
grader checked (:func:`.rft_graders.check_grader_here`) or run on one sample by the server's
:class:`.rft_graders.GraderRunner` (contract in :mod:`.rft_graders`), off the event loop.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from ..serve.protocol import APIError
from .bodies import read_json
from .rft_graders import check_grader_here
from .service import Service, project, service

router = APIRouter()


def _body_fields(body: dict, allowed: tuple[str, ...], required: tuple[str, ...]) -> None:
    extra = sorted(set(body) - set(allowed))
    if extra:
        raise APIError(400, f"Unrecognized request argument supplied: {extra[0][:100]}", param=extra[0][:100])
    for key in required:
        if key not in body:
            raise APIError(
                400, f"Missing required parameter: '{key}'.", param=key, code="missing_required_parameter"
            )


@router.post("/v1/fine_tuning/alpha/graders/validate")
async def validate_grader(request: Request, proj: dict = Depends(project), svc: Service = Depends(service)):
    body = await read_json(request)
    _body_fields(body, ("grader",), ("grader",))
    await run_in_threadpool(check_grader_here, body["grader"], svc.settings, "grader")
    return {"grader": body["grader"]}


@router.post("/v1/fine_tuning/alpha/graders/run")
async def run_grader(request: Request, proj: dict = Depends(project), svc: Service = Depends(service)):
    body = await read_json(request)
    _body_fields(body, ("grader", "model_sample", "item"), ("grader", "model_sample"))
    return await run_in_threadpool(svc.graders.run, body["grader"], body["model_sample"], body.get("item"))
