"""The request queue behind the Tinker SDK's futures (``tinker`` 0.38).

Every Tinker call that does work (``forward_backward``, ``optim_step``, ``save_weights``, …)
answers at once with a request id; the SDK then polls ``POST /api/v1/retrieve_future`` with
``{"request_id"}`` until it gets something other than "try again". Its poller
(``tinker/lib/api_future_impl.py``, ``_fetch_via_rest``) reads a JSON body as:

- ``{"type": "try_again", "request_id", "queue_state": "active"}`` — poll again
  (``TryAgainResponse``);
- ``{"error": str, "category": "user" | "server" | "unknown"}`` — raise ``RequestFailedError``
  with that ``RequestErrorCategory`` (``RequestFailedResponse``);
- anything else — the result (or a protobuf body when the content type says so).

An unknown id is for the route to answer 404, which the SDK treats as fatal.

:class:`FutureQueue` holds the requests. Contract:

- :meth:`FutureQueue.submit` ``(owner, model_id, fn)`` queues ``fn()`` and returns a random,
  non-guessable request id.
- Requests of one model (one ``(owner, model_id)``) run strictly in submission order, one at a
  time, even with several workers: gradients accumulate and ``optim_step`` must see them.
- Models with pending work take turns (round-robin: after a model's request finishes it goes to
  the back of the line), on ``workers`` threads (default 1: one CPU trains one thing at a time).
- :meth:`FutureQueue.poll` returns a :class:`Poll`: the try-again body while queued or running,
  the value ``fn`` returned once done, or a failure body — category ``user`` with the message for
  a :class:`~tunesmith.errors.TunesmithError`, ``server`` with a generic message for anything
  else (the traceback goes to the log, never to the client). An unknown id, an evicted one and
  another owner's one all raise the same :class:`FutureNotFound`: nothing leaks between keys.
- Finished requests are kept ``keep_seconds`` after they finish and at most ``keep_max`` of them
  (oldest dropped first); queued and running ones are never dropped.
- :meth:`FutureQueue.close` stops taking requests, fails the queued ones (category ``server``),
  lets running ones finish and joins the workers.

Pure Python (threads, no web framework): the HTTP layer maps :class:`Poll` to a response.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from ..errors import TunesmithError

log = logging.getLogger(__name__)

USER = "user"
SERVER = "server"
"""Values of the SDK's ``RequestErrorCategory`` (a StrEnum of lower-case names)."""


class FutureNotFound(TunesmithError):
    """No such request for this owner (unknown, evicted, or another owner's): answer 404."""


@dataclass(frozen=True)
class Poll:
    """What ``retrieve_future`` answers: ``state`` is ``"pending"`` (``body`` is the try-again
    JSON), ``"done"`` (``body`` is what the request's function returned) or ``"failed"``
    (``body`` is the failure JSON with its category)."""

    state: str
    body: Any


@dataclass
class _Request:
    id: str
    owner: Hashable
    key: tuple[Hashable, str]
    fn: Callable[[], Any] | None
    state: str = "queued"  # queued -> running -> done | failed
    body: Any = None
    finished_at: float = 0.0


class FutureQueue:
    """Queued Tinker requests, run on ``workers`` threads; see the module docstring."""

    def __init__(
        self,
        workers: int = 1,
        *,
        keep_seconds: float = 3600.0,
        keep_max: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if keep_max < 0 or keep_seconds < 0:
            raise ValueError("keep_max and keep_seconds must not be negative")
        self._keep_seconds, self._keep_max, self._clock = keep_seconds, keep_max, clock
        self._cond = threading.Condition()
        self._requests: dict[str, _Request] = {}
        self._pending: dict[tuple[Hashable, str], deque[_Request]] = {}
        self._ready: deque[tuple[Hashable, str]] = deque()  # models with work, none running
        self._busy: set[tuple[Hashable, str]] = set()
        self._finished: OrderedDict[str, None] = OrderedDict()  # in finishing order
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"tinker-futures-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    # ---- client side ---------------------------------------------------------------------

    def submit(self, owner: Hashable, model_id: str, fn: Callable[[], Any]) -> str:
        """Queue ``fn()`` behind ``owner``'s earlier requests for ``model_id``; its request id.
        RuntimeError after :meth:`close`."""
        request_id = "req_" + secrets.token_urlsafe(18)  # 144 random bits
        key = (owner, model_id)
        with self._cond:
            if self._closed:
                raise RuntimeError("the request queue is closed")
            self._evict()
            req = _Request(id=request_id, owner=owner, key=key, fn=fn)
            self._requests[request_id] = req
            queue = self._pending.setdefault(key, deque())
            queue.append(req)
            if len(queue) == 1 and key not in self._busy:
                self._ready.append(key)
                self._cond.notify_all()
        return request_id

    def poll(self, owner: Hashable, request_id: str) -> Poll:
        """Where ``owner``'s request stands now; :class:`FutureNotFound` if it has none by this id."""
        with self._cond:
            self._evict()
            return self._poll(self._find(owner, request_id))

    def wait(self, owner: Hashable, request_id: str, timeout: float | None = None) -> Poll:
        """:meth:`poll`, after waiting up to ``timeout`` seconds for the request to finish (for
        a route that long-polls, and for tests)."""
        with self._cond:
            req = self._find(owner, request_id)
            self._cond.wait_for(lambda: req.state in ("done", "failed"), timeout)
            return self._poll(req)

    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, fail the queued ones, let running ones finish, join the workers."""
        with self._cond:
            self._closed = True
            for queue in self._pending.values():
                for req in queue:
                    self._finish(req, "failed", _failure("the server is shutting down", SERVER))
            self._pending.clear()
            self._ready.clear()
            self._cond.notify_all()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)

    def __enter__(self) -> FutureQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internals (callers hold self._cond unless said otherwise) -------------------------

    def _find(self, owner: Hashable, request_id: str) -> _Request:
        req = self._requests.get(request_id) if isinstance(request_id, str) else None
        if req is None or req.owner != owner:
            # One message for all three cases, so a probe cannot tell another key's id apart.
            raise FutureNotFound(f"no request {request_id!r}")
        return req

    @staticmethod
    def _poll(req: _Request) -> Poll:
        if req.state in ("queued", "running"):
            return Poll("pending", {"type": "try_again", "request_id": req.id, "queue_state": "active"})
        return Poll(req.state, req.body)

    def _finish(self, req: _Request, state: str, body: Any) -> None:
        req.state, req.body, req.fn = state, body, None
        req.finished_at = self._clock()
        self._finished[req.id] = None

    def _evict(self) -> None:
        horizon = self._clock() - self._keep_seconds
        while self._finished:
            oldest = self._requests[next(iter(self._finished))]
            if len(self._finished) <= self._keep_max and oldest.finished_at > horizon:
                break
            self._finished.popitem(last=False)
            del self._requests[oldest.id]

    def _work(self) -> None:  # a worker thread; takes the lock itself
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._ready)
                if not self._ready:  # closed and nothing left to start
                    return
                key = self._ready.popleft()
                req = self._pending[key].popleft()
                self._busy.add(key)
                req.state = "running"
                fn = req.fn
            try:
                state, body = "done", fn()
            except TunesmithError as exc:
                state, body = "failed", _failure(str(exc) or type(exc).__name__, USER)
            except Exception:
                log.exception("tinker request %s failed", req.id)
                state, body = "failed", _failure(f"internal server error (request {req.id})", SERVER)
            with self._cond:
                self._finish(req, state, body)
                self._busy.discard(key)
                if self._pending.get(key):
                    self._ready.append(key)  # to the back: the other models go first
                else:
                    self._pending.pop(key, None)
                self._evict()
                self._cond.notify_all()


def _failure(message: str, category: str) -> dict[str, str]:
    return {"error": message, "category": category}
