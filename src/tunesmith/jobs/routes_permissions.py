"""Checkpoint permissions (spec P1-P3): share a checkpoint model with other projects.

``POST/GET /v1/fine_tuning/checkpoints/{ckpt}/permissions`` and ``DELETE …/permissions/{id}``.
They need an admin key (``tunesmith server keys create --admin``), which belongs to a project like
any key and manages the permissions of that project's checkpoints only; any other key gets 403
``permission_error`` before the checkpoint is looked up, so it learns nothing about it. A
checkpoint of another project, or one that does not exist, is 404 alike. The effect of a
permission (using the checkpoint model for inference, listing it and continued fine-tuning from
it) is applied by :class:`.access.ModelAccess`.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ..serve.protocol import APIError
from .bodies import read_json
from .errors import not_found
from .objects import page, paged, parse_limit, permission_object
from .service import Service, project, service

ORDERS = {"ascending": True, "descending": False}
MAX_PROJECT_IDS = 100
router = APIRouter()


def _checkpoint_not_found(ckpt: str) -> APIError:
    return not_found(
        f"No such fine-tuned model checkpoint: {ckpt}", "fine_tuned_model_checkpoint", "model_not_found"
    )


def admin(proj: dict = Depends(project)) -> dict:
    """Dependency: the caller's project, when its key is an admin key; 403 otherwise (before any
    checkpoint is looked up, so another key learns nothing about it)."""
    if not proj.get("admin"):
        raise APIError(
            403,
            "Checkpoint permissions can only be managed with an admin API key "
            "(tunesmith server keys create --admin).",
            code="insufficient_permissions",
        )
    return proj


def _own_checkpoint(svc: Service, proj: dict, ckpt: str) -> tuple[dict, int]:
    try:
        row, step = svc.access.own(proj["id"], ckpt)
    except APIError:
        raise _checkpoint_not_found(ckpt) from None
    if step is None:  # a final model: OpenAI shares checkpoints only
        raise _checkpoint_not_found(ckpt)
    return row, step


@router.post("/v1/fine_tuning/checkpoints/{ckpt}/permissions")
async def create_permissions(
    ckpt: str, request: Request, proj: dict = Depends(admin), svc: Service = Depends(service)
):
    wanted = (await read_json(request)).get("project_ids")
    if not isinstance(wanted, list) or not wanted or not all(isinstance(p, str) for p in wanted):
        raise APIError(400, "'project_ids' must be a non-empty array of project ids.", param="project_ids")
    if len(wanted) > MAX_PROJECT_IDS:  # each id is looked up: bound the work one request causes
        raise APIError(
            400, f"'project_ids' may name at most {MAX_PROJECT_IDS} projects.", param="project_ids"
        )
    row, step = _own_checkpoint(svc, proj, ckpt)
    for pid in wanted:
        if not svc.store.project_exists(pid):
            raise APIError(400, f"No such project: {pid}", param="project_ids", code="project_not_found")
    unique = list(dict.fromkeys(wanted))
    rows = svc.store.add_permissions(ckpt, row["id"], step, proj["id"], unique)
    return page([permission_object(r) for r in rows], False, with_ids=True)


@router.get("/v1/fine_tuning/checkpoints/{ckpt}/permissions")
def list_permissions(
    ckpt: str,
    after: str | None = None,
    limit: str | None = None,
    order: str = "descending",
    project_id: str | None = None,
    proj: dict = Depends(admin),
    svc: Service = Depends(service),
):
    if order not in ORDERS:
        raise APIError(400, f"Invalid order: {order!r}. Expected 'ascending' or 'descending'.", param="order")
    n = parse_limit(limit, 10, 100)
    _own_checkpoint(svc, proj, ckpt)
    rows, more = paged(
        lambda: svc.store.list_permissions(
            proj["id"], ckpt, after=after, limit=n, ascending=ORDERS[order], project_id=project_id
        ),
        after,
    )
    return page([permission_object(r) for r in rows], more, with_ids=True)


@router.delete("/v1/fine_tuning/checkpoints/{ckpt}/permissions/{permission_id}")
def delete_permission(
    ckpt: str, permission_id: str, proj: dict = Depends(admin), svc: Service = Depends(service)
):
    _own_checkpoint(svc, proj, ckpt)
    if not svc.store.delete_permission(proj["id"], ckpt, permission_id):
        raise not_found(
            f"No such checkpoint permission: {permission_id}", "permission_id", "permission_not_found"
        )
    return {"id": permission_id, "object": "checkpoint.permission", "deleted": True}
