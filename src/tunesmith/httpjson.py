"""Reading a JSON request body: the one reader both HTTP servers (``serve`` and the jobs
service) use, so every hostile body gets the same answer from either.

:func:`read_json_object` streams the body with a size cap (413 past :data:`MAX_BODY_BYTES`,
checked against ``Content-Length`` first and while reading a chunked body), parses it with
:func:`tunesmith.jsontext.loads` (no NaN / Infinity, bounded nesting, no over-long integers, no
unpaired surrogates) and requires an object. Failures raise :class:`BodyError`, which each app
turns into its own OpenAI error envelope. The bytes stay cached on the request as
``Request.body()`` caches them, so an app that reads a body and then hands the request to
another app's route (the jobs service's chat route calling serve's) reads it once from the wire.
"""

from __future__ import annotations

import json
from typing import Any

from . import jsontext

MAX_BODY_BYTES = 16 * 2**20
"""No create-job or permissions body comes near this, and a chat request this size is ~4 M
tokens, far past any served context; without a cap a chunked body is read into memory unbounded."""


class BodyError(Exception):
    """A request body that is not an acceptable JSON object: ``status`` 400 or 413, ``code``."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


async def read_json_object(request, *, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The body of ``request`` (a Starlette request) as a JSON object; :class:`BodyError` else."""
    try:
        value = jsontext.loads(await read_body(request, max_bytes=max_bytes), allow_nan=False)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        why = "it is not UTF-8" if isinstance(exc, UnicodeDecodeError) else exc.msg
        raise BodyError(400, f"The request body is not valid JSON: {why}.") from None
    if not isinstance(value, dict):
        raise BodyError(400, "The request body must be a JSON object.")
    return value


async def read_body(request, *, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The whole body, refused with a 413 :class:`BodyError` as soon as it passes ``max_bytes``."""
    too_large = BodyError(
        413, f"The request body is larger than {max_bytes} bytes.", code="request_too_large"
    )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():  # yields the cached body when it was read already
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    request._body = b"".join(chunks)  # what Request.body() stores: later readers get the same bytes
    return request._body
