"""The official ``openai`` SDK client for migration commands, retries, and one-line API errors."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import TunesmithError

T = TypeVar("T")
RETRY_CAP_S = 60.0  # longest wait between two tries of one request


class APIRefused(TunesmithError):
    """The server answered a request with an error that retrying cannot fix (4xx)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def make_client(base_url: str, api_key: str, *, max_retries: int = 0, timeout: float = 600.0):
    """``openai.OpenAI`` for ``base_url`` (e.g. ``https://api.openai.com/v1``) with ``api_key``.
    The SDK's own retries are off by default: :func:`with_retries` is the one retry layer (with
    both, a dead server would be tried attempts × (1 + max_retries) times). A missing SDK or an
    empty key is a one-line TunesmithError."""
    try:
        import openai
    except ImportError:
        raise TunesmithError("tunesmith openai needs the official SDK: pip install openai") from None
    if not api_key:
        raise TunesmithError("--api-key is empty (pass the key, or set OPENAI_API_KEY)")
    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=timeout)


def api_error_text(exc: BaseException) -> str:
    """``"404 file_not_found: No such File object: file-x"`` for an SDK status error; the
    exception's own text otherwise. Always one line."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        message = body.get("message") or exc.message
        code = exc.code or exc.type or ""
        text = f"{exc.status_code} {code}: {message}" if code else f"{exc.status_code}: {message}"
    elif isinstance(exc, openai.APIConnectionError):  # APITimeoutError too
        request = getattr(exc, "request", None)
        text = f"cannot reach {request.url if request is not None else 'the server'}: {exc}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(str(text).split())


def is_transient(exc: BaseException) -> bool:
    """Worth trying again: 408, 409, 429, 5xx, a dropped connection or a timeout."""
    import openai

    if isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError)):
        return True
    return isinstance(exc, openai.APIStatusError) and (
        exc.status_code in (408, 409, 429) or exc.status_code >= 500
    )


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked to wait (``retry-after-ms`` / ``retry-after``), if it did."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    for key, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            return float(headers[key]) * scale
        except (KeyError, TypeError, ValueError):
            continue
    return None


def with_retries(
    call: Callable[[], T],
    *,
    what: str,
    attempts: int = 6,
    backoff: float = 1.0,
    sleep: Callable[[float], Any] = time.sleep,
) -> T:
    """``call()``, tried up to ``attempts`` times while it fails transiently
    (:func:`is_transient`), waiting ``backoff × 2^k`` seconds (or what the server asks, at most
    :data:`RETRY_CAP_S`). A 4xx is an :class:`APIRefused` at once and a transient failure that
    outlasts the tries one after them, both naming ``what`` and the server's message."""
    import openai

    for attempt in range(attempts):
        try:
            return call()
        except openai.OpenAIError as exc:
            if not is_transient(exc):
                status = getattr(exc, "status_code", None)
                raise APIRefused(f"{what}: {api_error_text(exc)}", status) from None
            if attempt == attempts - 1:
                raise APIRefused(
                    f"{what}: still failing after {attempts} tries: {api_error_text(exc)}",
                    getattr(exc, "status_code", None),
                ) from None
            wait = retry_after(exc)
            sleep(min(RETRY_CAP_S, wait if wait is not None else backoff * 2**attempt))
    raise AssertionError("unreachable")
