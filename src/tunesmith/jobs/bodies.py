"""The one reader of JSON request bodies in the jobs app, and the URL's NUL check.

Every route that takes JSON (create job, checkpoint permissions, chat / completions) reads its
body with :func:`read_json`, so every hostile body gets the same answer: a 400 in OpenAI's
envelope for text that is not a JSON object (invalid UTF-8, cut off, nested more than
:data:`tunesmith.jsontext.MAX_DEPTH` levels, an integer of more than 4,300 digits, NaN /
Infinity, which are not JSON), and a 413 for a body over :data:`MAX_JSON_BYTES`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from ..jsontext import loads
from .errors import APIError

MAX_JSON_BYTES = 16 * 1024 * 1024
"""No create-job or permissions body comes near this; a chat request this size is ~4 M tokens,
far past any served context. Without a cap a chunked body would be read into memory unbounded."""


async def read_json(request: Request, *, allow_nul: bool = False) -> dict[str, Any]:
    """The request's JSON object; :class:`APIError` 400 / 413 for anything else.

    A string holding NUL (``\u0000``) is refused unless ``allow_nul``: PostgreSQL cannot hold
    NUL in text, so such an id or name would fail the query instead of matching nothing (SQLite
    would store it), and no id, file name or metadata value needs one. The raw bytes stay cached
    on the request (as ``Request.body()`` caches them), so a route that hands the request on
    (serve's chat route) can read the same body again.
    """
    try:
        value = loads(await _body(request), allow_nan=False)
    except ValueError as exc:  # JSONDecodeError, jsontext.BadJSON and UnicodeDecodeError alike
        raise APIError(400, f"The request body is not valid JSON: {_reason(exc)}") from None
    if not isinstance(value, dict):
        raise APIError(400, "The request body must be a JSON object.")
    if not allow_nul and has_nul(value):
        raise APIError(400, NUL_MESSAGE)
    return value


NUL_MESSAGE = ("The request holds a NUL character (\\u0000), which this server does not accept in ids, "
               "names or metadata.")


def refuse_nul_in_url(request: Request) -> None:
    """App-wide dependency: 400 for a NUL (``%00``) in the path or query (see :func:`read_json`)."""
    query = request.query_params.multi_items()
    if "\x00" in request.url.path or any("\x00" in k + v for k, v in query):
        raise APIError(400, NUL_MESSAGE)


def has_nul(value: Any) -> bool:
    """Whether any string in a parsed JSON value (keys included) holds NUL; no recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


async def _body(request: Request) -> bytes:
    """The whole body, refused with 413 as soon as it passes :data:`MAX_JSON_BYTES`."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_JSON_BYTES:
        raise _too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise _too_large()
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # what Request.body() stores: later readers get the same bytes
    return body


def _too_large() -> APIError:
    return APIError(413, f"The request body is larger than {MAX_JSON_BYTES} bytes.",
                    code="request_too_large")


def _reason(exc: ValueError) -> str:
    """The parser's reason without echoing the (possibly huge) input."""
    if isinstance(exc, UnicodeDecodeError):
        return "it is not UTF-8"
    return getattr(exc, "msg", None) or str(exc)[:200]
