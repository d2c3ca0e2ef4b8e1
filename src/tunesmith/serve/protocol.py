"""OpenAI request bodies (validated with pydantic) and the error envelope.

Field names, defaults and ranges follow the OpenAI API reference for ``/v1/chat/completions``
and the legacy ``/v1/completions``. Unknown fields are ignored, as OpenAI-compatible servers
commonly do; fields that would change the meaning of the answer and are not implemented
(tools, ``response_format``, ``suffix`` ...) are rejected with a 400 instead of silently dropped.

Everything a request can make the generation thread do is bounded here, at the door, so a bad
value is the sender's 400 and never a failure inside the shared batch: floats must be finite,
``seed`` is a signed 64-bit integer (OpenAI's range), ``logit_bias`` has at most
:data:`MAX_LOGIT_BIAS` entries whose keys are short non-negative decimal token ids.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

_TYPES = {403: "permission_error", 429: "rate_limit_error"}


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status: ``invalid_request_error`` for a 4xx unless
    OpenAI uses a narrower one (403 ``permission_error``, 429 ``rate_limit_error``); a 5xx is
    ``server_error``."""
    if status in _TYPES:
        return _TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "server_error"


class APIError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}`` with ``status``;
    ``type`` defaults to :func:`error_type`. The one error of both OpenAI-compatible servers
    (``tunesmith serve`` and the jobs service)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or error_type(status)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict:
        """What the jobs service sends with it: ``x-should-retry: false`` on every 4xx, since the
        SDK retries 408/409/429 unless told otherwise and a rejected request must not be sent
        again (``tunesmith serve`` sends no extra header)."""
        return {"x-should-retry": "false"} if self.status < 500 else {}


def from_validation_error(exc: ValidationError) -> APIError:
    """The first pydantic error as a 400 naming the field (dotted, e.g. ``messages.0.role``)."""
    err = exc.errors()[0]
    param = ".".join(str(p) for p in err.get("loc", ())) or None
    return APIError(
        400,
        f"{param}: {err.get('msg')}" if param else str(err.get("msg")),
        param=param,
        code="invalid_value" if err.get("type") != "missing" else "missing_required_parameter",
    )


SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1  # OpenAI's seed: a signed 64-bit integer
MAX_LOGIT_BIAS = 300  # OpenAI's cap on logit_bias entries
_TOKEN_ID = re.compile(r"[0-9]{1,10}")  # a vocabulary index: no sign, no spaces, no 5,000 digits


class _Body(BaseModel):
    # allow_inf_nan=False: "inf" / 1e999 in any float field is a 400, never a sampling input.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v):
        """Keys: decimal token ids of at most 10 digits (the vocabulary check needs the model and
        is the app's); values: finite, -100..100; at most MAX_LOGIT_BIAS entries."""
        if v and len(v) > MAX_LOGIT_BIAS:
            raise ValueError(f"at most {MAX_LOGIT_BIAS} entries, got {len(v)}")
        for key, bias in (v or {}).items():
            if not _TOKEN_ID.fullmatch(key):
                shown = key if len(key) <= 20 else key[:20] + "..."
                raise ValueError(f"keys must be token ids (non-negative integers), got {shown!r}")
            if not -100 <= bias <= 100:  # also False for NaN
                raise ValueError("values must be between -100 and 100")
        return v

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = []
        for part in self.content:
            if part.type != "text":
                raise ValueError(f"content parts of type {part.type!r} are not supported (text only)")
            parts.append(part.text or "")
        return "".join(parts)


class ChatCompletionRequest(_Body):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list | None = None
    response_format: dict | None = None

    def unsupported(self) -> str | None:
        if self.tools:
            return "tools"
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            return "response_format"
        return None


class CompletionRequest(_Body):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=0)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    def unsupported(self) -> str | None:
        if self.suffix:
            return "suffix"
        if self.best_of not in (None, 1, self.n):
            return "best_of"
        return None

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [list(p)]
        return list(p)
