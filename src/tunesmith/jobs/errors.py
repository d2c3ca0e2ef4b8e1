"""API errors in OpenAI's envelope: ``{"error": {"message", "type", "param", "code"}}``.

Every 4xx answer carries ``x-should-retry: false``: the SDK retries 408/409/429/5xx unless told
otherwise, and a rejected request or state transition must not be sent again.
"""

from __future__ import annotations

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
          404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error"}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or _TYPES.get(status, "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict:
        return {"x-should-retry": "false"} if self.status < 500 else {}


def file_not_found(file_id: str) -> APIError:
    return APIError(404, f"No such File object: {file_id}", param="id", code="file_not_found")


def job_not_found(job_id: str) -> APIError:
    return APIError(404, f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id",
                    code="fine_tuning_job_not_found")


def model_not_found(model: str) -> APIError:
    return APIError(404, f"The model `{model}` does not exist or you do not have access to it.",
                    param="model", code="model_not_found")
