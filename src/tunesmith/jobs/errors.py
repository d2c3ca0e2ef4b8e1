"""API errors in OpenAI's envelope: ``{"error": {"message", "type", "param", "code"}}``.

Every 4xx answer carries ``x-should-retry: false``: the SDK retries 408/409/429/5xx unless told
otherwise, and a rejected request or state transition must not be sent again. The ``type`` of a
4xx is ``invalid_request_error`` unless OpenAI uses a narrower one (403 ``permission_error``,
429 ``rate_limit_error``); only 5xx are ``server_error``.

:class:`LastResort` answers any exception that escaped a route (a bug, never a client mistake)
with a 500 in the same envelope, after logging it, instead of a plain-text body.
"""

from __future__ import annotations

import json
import logging

from starlette.requests import ClientDisconnect

log = logging.getLogger("tunesmith.jobs")

_TYPES = {403: "permission_error", 429: "rate_limit_error"}


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status."""
    if status in _TYPES:
        return _TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "server_error"


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or error_type(status)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict:
        return {"x-should-retry": "false"} if self.status < 500 else {}


def require(row: dict | None, missing: APIError) -> dict:
    """``row`` as found by a store lookup; ``missing`` (raised) when the lookup found nothing."""
    if row is None:
        raise missing
    return row


def file_not_found(file_id: str) -> APIError:
    return APIError(404, f"No such File object: {file_id}", param="id", code="file_not_found")


def job_not_found(job_id: str) -> APIError:
    return APIError(
        404,
        f"No such fine-tuning job: {job_id}",
        param="fine_tuning_job_id",
        code="fine_tuning_job_not_found",
    )


def model_not_found(model: str) -> APIError:
    return APIError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


INTERNAL_ERROR = APIError(500, "The server had an error while processing your request.")


class LastResort:
    """ASGI middleware: an exception no handler answered becomes a logged 500 in the envelope.

    Starlette's own last handler re-raises after answering and sends plain text without one; this
    sits inside it, so the exception stops here. The message is fixed: exception text can name
    server paths. If the response had already started, the connection can only be dropped. A
    client that disconnected while its body was read (``ClientDisconnect``) is logged at info
    level only: a route that must clean up after one does so itself (uploads).
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:  # the client is gone: nothing to answer, nothing went wrong here
            log.info("client disconnected during %s %s", scope.get("method"), scope.get("path"))
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await _send_json(send, INTERNAL_ERROR.status, INTERNAL_ERROR.body())


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})
