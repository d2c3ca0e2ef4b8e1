"""``/v1/models``: list, retrieve and delete models.

A project sees the allow-listed base models (``owned_by: system``), its own ``ft:`` models and
the checkpoints other projects shared with it (listed under their owner). Deleting a model stops
serving it (and its checkpoints) on this server at once; base models and shared checkpoints are
not the caller's to delete.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ..serve.protocol import APIError
from .objects import model_object
from .service import Service, project, service

router = APIRouter()


@router.get("/v1/models")
def list_models(proj: dict = Depends(project), svc: Service = Depends(service)):
    access = svc.access
    data = [model_object(name, 0, "system") for name in sorted(svc.settings.base_models)]
    data += [
        access.model_object(r["fine_tuned_model"], r, None) for r in svc.store.list_model_jobs(proj["id"])
    ]
    # checkpoints other projects shared with this one (P1): listed under their owner
    data += [access.model_object(ckpt, r, step) for ckpt, r, step in access.shared_with(proj["id"])]
    return {"object": "list", "data": data}


@router.get("/v1/models/{model:path}")
def retrieve_model(model: str, proj: dict = Depends(project), svc: Service = Depends(service)):
    if model in svc.settings.base_models:
        return model_object(model, 0, "system")
    row, step = svc.access.usable(proj["id"], model)
    return svc.access.model_object(model, row, step)


@router.delete("/v1/models/{model:path}")
def delete_model(model: str, proj: dict = Depends(project), svc: Service = Depends(service)):
    if model in svc.settings.base_models:
        raise APIError(
            403,
            "You do not have permission to delete this model.",
            param="model",
            code="model_not_deletable",
        )
    row, step = svc.access.own(proj["id"], model)  # a shared checkpoint is not the grantee's to delete
    if step is not None:
        raise APIError(
            400,
            "Checkpoint models cannot be deleted on their own; delete the fine-tuned model.",
            param="model",
        )
    svc.store.update_job(row["id"], model_deleted=True)
    svc.inference.forget(model)  # stop serving it (and its checkpoints) on this server at once
    return {"id": model, "object": "model", "deleted": True}
