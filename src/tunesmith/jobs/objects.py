"""Store rows -> OpenAI API objects, field for field (../shared spec §1.2)."""

from __future__ import annotations

from ..serve.protocol import APIError
from . import ids
from .spec import hyperparameters
from .store import CursorNotFound


def file_object(row: dict) -> dict:
    return {
        "id": row["id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": row["created_at"],
        "expires_at": row["expires_at"],
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": row["status"],
        "status_details": row["status_details"],
    }


def job_object(row: dict) -> dict:
    method = row["method"]
    return {
        "id": row["id"],
        "object": "fine_tuning.job",
        "created_at": row["created_at"],
        "error": row["error"],
        "fine_tuned_model": row["fine_tuned_model"],
        "finished_at": row["finished_at"],
        "hyperparameters": hyperparameters(method),
        "model": row["model"],
        "organization_id": row["project_id"],
        "result_files": list(row["result_files"] or []),
        "seed": row["seed"],
        "status": row["status"],
        "trained_tokens": row["trained_tokens"],
        "training_file": row["training_file"],
        "validation_file": row["validation_file"],
        "estimated_finish": row["estimated_finish"],
        "integrations": list(row["integrations"] or []),
        "metadata": row["metadata"],
        "method": method,
        "user_provided_suffix": row["suffix"],
    }


def event_object(row: dict) -> dict:
    return {
        "id": row["id"],
        "object": "fine_tuning.job.event",
        "created_at": row["created_at"],
        "level": row["level"],
        "message": row["message"],
        "type": row["type"],
        "data": row["data"] or {},
    }


def checkpoint_object(row: dict) -> dict:
    return {
        "id": row["id"],
        "object": "fine_tuning.job.checkpoint",
        "created_at": row["created_at"],
        "fine_tuned_model_checkpoint": row["fine_tuned_model_checkpoint"],
        "fine_tuning_job_id": row["job_id"],
        "step_number": row["step_number"],
        "metrics": row["metrics"],
    }


def model_object(model_id: str, created: int, owned_by: str) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}


def permission_object(row: dict) -> dict:
    return {
        "id": row["id"],
        "object": "checkpoint.permission",
        "created_at": row["created_at"],
        "project_id": row["project_id"],
    }


def base_name(row: dict) -> str:
    """The allow-listed base model a job trains on: its ``model``, or for continued fine-tuning
    (``model`` is an ``ft:`` id) the base named inside that id, which is its root base."""
    ref = ids.parse_ft_model(row["model"]) if row["model"].startswith("ft:") else None
    return ref.base if ref is not None else row["model"]


def job_model_id(row: dict, owner: str, step: int | None = None) -> str:
    """The job's ``ft:`` model id (or a checkpoint's, with ``step``), named after its base model
    (a continued fine-tune of ``ft:tiny:…`` is ``ft:tiny:…`` too, spec section 1.4)."""
    return ids.ft_model_id(base_name(row), owner, row["suffix"], row["model_key"], step)


def page(data: list[dict], has_more: bool, *, with_ids: bool = False) -> dict:
    """A list object; ``with_ids`` adds ``first_id``/``last_id`` (files, checkpoints and
    permissions: the SDK's permissions paginator reads ``last_id``)."""
    out = {"object": "list", "data": data, "has_more": has_more}
    if with_ids:
        out["first_id"] = data[0]["id"] if data else None
        out["last_id"] = data[-1]["id"] if data else None
    return out


def parse_limit(value: str | None, default: int, maximum: int = 10000) -> int:
    """The ``limit`` query parameter: ``default`` when absent; 400 outside 1..``maximum``."""
    if value is None:
        return default
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= maximum:
        raise APIError(
            400, f"Invalid limit: {value!r}. It must be an integer between 1 and {maximum}.", param="limit"
        )
    return n


def paged(fn, after: str | None):
    """Run a store listing; an ``after`` cursor that names no listed object is a 400."""
    try:
        return fn()
    except CursorNotFound:
        raise APIError(400, f"Invalid 'after' cursor: {after}", param="after") from None
