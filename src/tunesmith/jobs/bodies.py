"""The one reader of JSON request bodies in the jobs app, and the URL's NUL check.

Every route that takes JSON (create job, checkpoint permissions, chat / completions) reads its
body with :func:`read_json`, so every hostile body gets the same answer: a 400 in OpenAI's
envelope for text that is not a JSON object (invalid UTF-8, cut off, nested more than
:data:`tunesmith.jsontext.MAX_DEPTH` levels, an integer of more than 4,300 digits, NaN /
Infinity, an unpaired surrogate), and a 413 for a body over
:data:`tunesmith.httpjson.MAX_BODY_BYTES`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from ..httpjson import BodyError, read_json_object
from ..jsontext import strings
from ..serve.protocol import APIError


async def read_json(request: Request, *, allow_nul: bool = False) -> dict[str, Any]:
    """The request's JSON object (:func:`tunesmith.httpjson.read_json_object`, shared with
    serve); :class:`APIError` 400 / 413 for anything else.

    A string holding NUL (``\u0000``) is refused unless ``allow_nul``: PostgreSQL cannot hold
    NUL in text, so such an id or name would fail the query instead of matching nothing (SQLite
    would store it), and no id, file name or metadata value needs one.
    """
    try:
        value = await read_json_object(request)
    except BodyError as exc:
        raise APIError(exc.status, exc.message, code=exc.code) from None
    if not allow_nul and has_nul(value):
        raise APIError(400, NUL_MESSAGE)
    return value


NUL_MESSAGE = (
    "The request holds a NUL character (\\u0000), which this server does not accept in ids, "
    "names or metadata."
)


def refuse_nul_in_url(request: Request) -> None:
    """App-wide dependency: 400 for a NUL (``%00``) in the path or query (see :func:`read_json`)."""
    query = request.query_params.multi_items()
    if "\x00" in request.url.path or any("\x00" in k + v for k, v in query):
        raise APIError(400, NUL_MESSAGE)


def has_nul(value: Any) -> bool:
    """Whether any string in a parsed JSON value (keys included) holds NUL."""
    return any("\x00" in s for s in strings(value))
