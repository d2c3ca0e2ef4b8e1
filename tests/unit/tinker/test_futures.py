"""tunesmith.tinker.futures: ordering, fairness, poll bodies, isolation, eviction, close.

Deterministic: requests block on threading.Event gates and the tests wait on the queue's own
``wait`` (no sleeps). The bodies are checked against the tinker SDK's own pydantic types.
"""

from __future__ import annotations

import threading

import pytest

from tunesmith.errors import DataError
from tunesmith.tinker.futures import FutureNotFound, FutureQueue

TIMEOUT = 10.0


def _gate():
    """A request function that blocks until the returned event is set, and an event it sets
    once it has started."""
    started, release = threading.Event(), threading.Event()

    def fn():
        started.set()
        assert release.wait(TIMEOUT)
        return "gate"

    return fn, started, release


def _recorder(log, name):
    def fn():
        log.append(name)
        return name

    return fn


def _done(q, owner, rid):
    p = q.wait(owner, rid, TIMEOUT)
    assert p.state in ("done", "failed"), p
    return p


def test_one_model_runs_in_submission_order_even_with_several_workers():
    log: list[str] = []
    with FutureQueue(workers=4) as q:
        fn, started, release = _gate()
        first = q.submit("k", "m", fn)
        assert started.wait(TIMEOUT)
        ids = [q.submit("k", "m", _recorder(log, f"r{i}")) for i in range(20)]
        # Four workers are free, but the model's next request waits for the one running.
        assert log == []
        assert q.poll("k", ids[0]).state == "pending"
        release.set()
        assert _done(q, "k", first).body == "gate"
        for rid in ids:
            _done(q, "k", rid)
    assert log == [f"r{i}" for i in range(20)]


def test_two_models_take_turns_on_one_worker():
    log: list[str] = []
    with FutureQueue(workers=1) as q:
        fn, started, release = _gate()
        gate = q.submit("k", "a", fn)
        assert started.wait(TIMEOUT)
        ids = [q.submit("k", "a", _recorder(log, f"a{i}")) for i in range(3)]
        ids += [q.submit("k", "b", _recorder(log, f"b{i}")) for i in range(2)]
        release.set()
        for rid in [gate, *ids]:
            _done(q, "k", rid)
    # a's gate ran first, so b goes next, then they alternate; a finishes alone.
    assert log == ["b0", "a0", "b1", "a1", "a2"]


def test_try_again_while_queued_and_running_then_the_result():
    with FutureQueue() as q:
        fn, started, release = _gate()
        running = q.submit("k", "m", fn)
        queued = q.submit("k", "m", lambda: {"metrics": {"loss:sum": 1.5}})
        assert started.wait(TIMEOUT)
        for rid in (running, queued):
            p = q.poll("k", rid)
            assert p.state == "pending"
            assert p.body == {"type": "try_again", "request_id": rid, "queue_state": "active"}
        assert q.wait("k", queued, timeout=0).state == "pending"
        release.set()
        assert _done(q, "k", running).body == "gate"
        assert _done(q, "k", queued).body == {"metrics": {"loss:sum": 1.5}}
        # A finished result may be polled again (the SDK retries lost responses).
        assert q.poll("k", queued).body == {"metrics": {"loss:sum": 1.5}}


def test_failures_carry_a_category_and_never_a_traceback(caplog):
    def user_error():
        raise DataError("datum 3 is longer than the context", field="data[3]")

    def server_bug():
        raise KeyError("/secret/internal/path")

    with FutureQueue() as q:
        u = _done(q, "k", q.submit("k", "m", user_error))
        s = _done(q, "k", q.submit("k", "m", server_bug))
        after = _done(q, "k", q.submit("k", "m", lambda: 7))  # the worker survived
    assert u.state == "failed"
    assert u.body == {"error": "datum 3 is longer than the context", "category": "user"}
    assert s.state == "failed" and s.body["category"] == "server"
    assert "secret" not in s.body["error"] and "Traceback" not in s.body["error"]
    assert "KeyError" in caplog.text  # the traceback goes to the server's log instead
    assert after.body == 7


def test_another_owners_request_is_indistinguishable_from_a_missing_one():
    with FutureQueue() as q:
        rid = q.submit("alice", "m", lambda: "alice's result")
        assert _done(q, "alice", rid).body == "alice's result"
        with pytest.raises(FutureNotFound) as theirs:
            q.poll("bob", rid)
        with pytest.raises(FutureNotFound) as missing:
            q.poll("bob", "req_" + "x" * 24)
        assert str(theirs.value) == f"no request {rid!r}"
        assert str(missing.value) == f"no request {'req_' + 'x' * 24!r}"
        with pytest.raises(FutureNotFound):
            q.wait("bob", rid, TIMEOUT)
        with pytest.raises(FutureNotFound):
            q.poll("alice", None)  # type: ignore[arg-type]
        # Same model id under two owners: two separate models (bob's does not queue behind alice's).
        fn, started, release = _gate()
        blocked = q.submit("alice", "m", fn)
        assert started.wait(TIMEOUT)
        other = q.submit("bob", "m", lambda: "bob's")
        assert q.poll("alice", blocked).state == "pending"
        release.set()
        assert _done(q, "bob", other).body == "bob's"


def test_request_ids_are_random_and_unique():
    with FutureQueue() as q:
        ids = {q.submit("k", "m", lambda: None) for _ in range(200)}
    assert len(ids) == 200
    assert all(rid.startswith("req_") and len(rid) >= 24 for rid in ids)


def test_finished_results_are_dropped_by_count_and_by_age():
    now = [0.0]
    with FutureQueue(keep_max=2, keep_seconds=60, clock=lambda: now[0]) as q:
        ids = [q.submit("k", "m", lambda i=i: i) for i in range(3)]
        for rid in ids:
            q.wait("k", rid, TIMEOUT)
        with pytest.raises(FutureNotFound):
            q.poll("k", ids[0])  # the oldest of three, over keep_max
        assert [q.poll("k", rid).body for rid in ids[1:]] == [1, 2]
        # A request still queued or running is never dropped, however old.
        fn, started, release = _gate()
        slow = q.submit("k", "m", fn)
        assert started.wait(TIMEOUT)
        now[0] = 61.0
        with pytest.raises(FutureNotFound):
            q.poll("k", ids[1])
        with pytest.raises(FutureNotFound):
            q.poll("k", ids[2])
        assert q.poll("k", slow).state == "pending"
        release.set()
        assert _done(q, "k", slow).body == "gate"
        now[0] = 121.0
        with pytest.raises(FutureNotFound):
            q.poll("k", slow)


def test_close_fails_queued_requests_finishes_running_ones_and_stops_workers():
    q = FutureQueue(workers=2)
    fn, started, release = _gate()
    running = q.submit("k", "m", fn)
    assert started.wait(TIMEOUT)
    queued = q.submit("k", "m", lambda: "never")
    closer = threading.Thread(target=q.close)
    closer.start()
    # The queued one is failed at once; the running one is let finish.
    assert q.wait("k", queued, TIMEOUT).body == {"error": "the server is shutting down", "category": "server"}
    with pytest.raises(RuntimeError):
        q.submit("k", "m", lambda: None)
    release.set()
    closer.join(TIMEOUT)
    assert not closer.is_alive()
    assert q.poll("k", running).body == "gate"
    assert not any(t.is_alive() for t in q._threads)


def test_bad_arguments():
    with pytest.raises(ValueError):
        FutureQueue(workers=0)
    with pytest.raises(ValueError):
        FutureQueue(keep_max=-1)


def test_bodies_parse_with_the_sdks_own_types():
    tinker = pytest.importorskip(
        "tinker", reason="the tinker SDK is not installed (pip install 'tunesmith[tinker]')"
    )
    from tinker import types as T
    from tinker.types.try_again_response import TryAgainResponse

    def user_error():
        raise DataError("bad datum")

    with FutureQueue() as q:
        fn, started, release = _gate()
        pending = q.submit("k", "m", fn)
        assert started.wait(TIMEOUT)
        try_again = TryAgainResponse.model_validate(q.poll("k", pending).body)
        assert try_again.request_id == pending and try_again.queue_state == "active"
        release.set()
        user = T.RequestFailedResponse.model_validate(_done(q, "k", q.submit("k", "m", user_error)).body)
        server = T.RequestFailedResponse.model_validate(_done(q, "k", q.submit("k", "m", lambda: 1 / 0)).body)
    assert user.category is T.RequestErrorCategory.User and user.error == "bad datum"
    assert server.category is T.RequestErrorCategory.Server
    assert tinker.RequestFailedError  # what the SDK raises from such a body
