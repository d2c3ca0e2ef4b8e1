"""``/v1/files``: upload (multipart, streamed to disk), list, retrieve, delete, content.

An upload is read by :func:`.blobs.receive_upload` alone (every client failure is an APIError in
the envelope, never a 5xx) into ``files/.incoming`` and committed under its generated id only
with its database row: whatever happens, nothing is left in ``.incoming``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from starlette.requests import ClientDisconnect

from ..serve.protocol import APIError
from . import ids
from .blobs import BadUpload, Upload, UploadTooLarge, receive_upload
from .errors import file_not_found, require
from .objects import file_object, page, paged, parse_limit
from .service import Service, project, service
from .store import now

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
router = APIRouter()


@router.post("/v1/files")
async def upload_file(request: Request, proj: dict = Depends(project), svc: Service = Depends(service)):
    fid = ids.file_id()
    tmp = svc.blobs.incoming(fid)
    try:  # whatever happens, nothing is left in .incoming, and a blob only with its row
        up = await _receive(request, tmp, svc.settings.max_upload_bytes)
        purpose, created = _purpose(up.fields), now()
        expires_at = _expiry(up.fields, created)
        svc.blobs.commit(tmp, fid)
        try:
            row = svc.store.add_file(
                {
                    "id": fid,
                    "project_id": proj["id"],
                    "bytes": up.size,
                    "created_at": created,
                    "expires_at": expires_at,
                    "filename": ids.clean_filename(up.filename or ""),
                    "purpose": purpose,
                    "status": "processed",
                    "status_details": None,
                }
            )
        except BaseException:
            svc.blobs.delete(fid)
            raise
    finally:
        tmp.unlink(missing_ok=True)
    return file_object(row)


@router.get("/v1/files")
def list_files(
    after: str | None = None,
    limit: str | None = None,
    order: str = "desc",
    purpose: str | None = None,
    proj: dict = Depends(project),
    svc: Service = Depends(service),
):
    if order not in ("asc", "desc"):
        raise APIError(400, f"Invalid order: {order!r}. Expected 'asc' or 'desc'.", param="order")
    n = parse_limit(limit, 10000)
    rows, more = paged(
        lambda: svc.store.list_files(
            proj["id"], after=after, limit=n, ascending=order == "asc", purpose=purpose
        ),
        after,
    )
    return page([file_object(r) for r in rows], more, with_ids=True)


def _file(svc: Service, proj: dict, file_id: str) -> dict:
    return require(svc.store.get_file(proj["id"], file_id), file_not_found(file_id))


@router.get("/v1/files/{file_id}")
def retrieve_file(file_id: str, proj: dict = Depends(project), svc: Service = Depends(service)):
    return file_object(_file(svc, proj, file_id))


@router.delete("/v1/files/{file_id}")
def delete_file(file_id: str, proj: dict = Depends(project), svc: Service = Depends(service)):
    _file(svc, proj, file_id)
    svc.store.delete_file(proj["id"], file_id)
    svc.blobs.delete(file_id)
    return {"id": file_id, "object": "file", "deleted": True}


@router.get("/v1/files/{file_id}/content")
def file_content(file_id: str, proj: dict = Depends(project), svc: Service = Depends(service)):
    row = _file(svc, proj, file_id)
    path = svc.blobs.path(row["id"])
    if not path.is_file():
        raise file_not_found(file_id)
    media = "text/csv" if row["purpose"] == "fine-tune-results" else "application/octet-stream"
    return FileResponse(path, media_type=media)


def _too_large(limit: int) -> APIError:
    return APIError(
        413, f"File is too large: the limit is {limit} bytes.", param="file", code="file_too_large"
    )


async def _receive(request: Request, tmp: Path, limit: int) -> Upload:
    """The parsed upload (file part at ``tmp``, at most ``limit`` bytes); every client failure
    as an APIError."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + 64 * 1024:  # 64 KiB: the form's other parts
        raise _too_large(limit)
    try:
        return await receive_upload(request.stream(), request.headers.get("content-type", ""), tmp, limit)
    except UploadTooLarge:
        raise _too_large(limit) from None
    except BadUpload as exc:
        raise APIError(400, f"Invalid upload: {exc}.", param="file") from None
    except ClientDisconnect:  # nobody reads this answer; it only ends the request quietly
        raise APIError(400, "The client disconnected before the upload was complete.", param="file") from None


def _purpose(fields: dict) -> str:
    purpose = fields.get("purpose")
    if purpose not in UPLOAD_PURPOSES:
        shown = purpose if purpose is None else purpose[:100]
        raise APIError(
            400, f"Invalid purpose: {shown!r}. Expected one of {', '.join(UPLOAD_PURPOSES)}.", param="purpose"
        )
    return purpose


def _expiry(fields: dict, created: int) -> int | None:
    anchor, seconds = fields.get("expires_after[anchor]"), fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    try:
        value = int(seconds or "")
    except ValueError:
        value = -1
    if anchor != "created_at" or not 3600 <= value <= 2592000:
        raise APIError(
            400,
            "Invalid expires_after: anchor must be 'created_at' and seconds between 3600 and 2592000.",
            param="expires_after",
        )
    return created + value
