"""The jobs service's errors, in OpenAI's envelope (:class:`tunesmith.serve.protocol.APIError`,
the one error class of both servers): the not-found answers its routes share.

Every 4xx answer carries ``x-should-retry: false`` (:meth:`~tunesmith.serve.protocol.APIError.headers`):
the SDK retries 408/409/429/5xx unless told otherwise, and a rejected request or state transition
must not be sent again.

:class:`LastResort` answers any exception that escaped a route (a bug, never a client mistake)
with a 500 in the same envelope, after logging it, instead of a plain-text body.
"""

from __future__ import annotations

import json
import logging

from starlette.requests import ClientDisconnect

from ..serve.protocol import APIError

log = logging.getLogger("tunesmith.jobs")


def require(row: dict | None, missing: APIError) -> dict:
    """``row`` as found by a store lookup; ``missing`` (raised) when the lookup found nothing."""
    if row is None:
        raise missing
    return row


def not_found(message: str, param: str, code: str) -> APIError:
    """A 404: what a missing object and another project's object both answer."""
    return APIError(404, message, param=param, code=code)


def file_not_found(file_id: str) -> APIError:
    return not_found(f"No such File object: {file_id}", "id", "file_not_found")


def job_not_found(job_id: str) -> APIError:
    return not_found(f"No such fine-tuning job: {job_id}", "fine_tuning_job_id", "fine_tuning_job_not_found")


def model_not_found(model: str) -> APIError:
    return not_found(
        f"The model `{model}` does not exist or you do not have access to it.", "model", "model_not_found"
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
