"""One request's failure is that request's alone; the batch carries on for the others.

Regressions: ``temperature`` 1e-300 (NaN probabilities) or a seed of 2**64 (``manual_seed``
overflow) inside the batch step made ``_run`` fail every running request with the exception
text, and the request that caused it, not yet in the batch, never heard back.

Requests are queued before the scheduler starts, so they are admitted in one prefill and decoded
in one batch; every good request must produce exactly what it produces alone.
"""

from __future__ import annotations

import threading

import pytest

from tunesmith.serve.sampling import SamplingParams
from tunesmith.serve.scheduler import GenRequest

PROMPTS = ["hello what color", "the sky is blue and the grass", "one two three"]
MAX_NEW = 12


class Events:
    """A request's sink: collects events; ``finished`` is set on done/error."""

    def __init__(self):
        self.events, self.finished = [], threading.Event()

    def __call__(self, event):
        self.events.append(event)
        if event["type"] in ("done", "error"):
            self.finished.set()

    @property
    def tokens(self):
        return [e["choice"].token for e in self.events if e["type"] == "token"]

    @property
    def kinds(self):
        return {e["type"] for e in self.events}


@pytest.fixture
def make_server(tiny_model_dir):
    from tunesmith.serve.server import InferenceServer

    servers = []

    def make():
        server = InferenceServer(str(tiny_model_dir), device="cpu", max_batch=8, start=False)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def _request(server, prompt, sink, **kw):
    entry = server.get(server.base_id)
    kw.setdefault("params", SamplingParams(temperature=0))
    return GenRequest(server.encode_text(entry, prompt), MAX_NEW, sink, entry.tokenizer, [], **kw)


def _run(server, reqs):
    server.scheduler.submit_all(reqs)
    server.scheduler.start()
    assert all(r.sink.finished.wait(60) for r in reqs)


@pytest.fixture
def alone(make_server):
    """Greedy tokens of each prompt decoded alone (the reference)."""
    server = make_server()
    out = {}
    for prompt in PROMPTS:
        sink = Events()
        server.scheduler.start()
        server.scheduler.submit(_request(server, prompt, sink))
        assert sink.finished.wait(60)
        out[prompt] = sink.tokens
    return out


def _check_good(reqs, alone):
    for r in reqs:
        assert r.sink.kinds == {"token", "finish", "done"}, r.sink.events[-1:]
        assert r.sink.tokens == alone[PROMPTS[reqs.index(r)]]


@pytest.mark.parametrize(
    "bad_kw",
    [
        {"params": SamplingParams(temperature=1e-300)},
        {"params": SamplingParams(temperature=5e-324, top_p=5e-324)},
        {"params": SamplingParams(temperature=1.0), "seed": 18446744073709551616},
        {"params": SamplingParams(temperature=1.0), "seed": -(2**63) - 1},
    ],
    ids=["temperature-1e-300", "temperature-5e-324", "seed-2**64", "seed-below-int64"],
)
def test_extreme_sampling_values_in_the_batch_harm_nobody(make_server, alone, bad_kw):
    """Values the door now rejects or defines (tiny T = greedy; any int seed wraps modulo 2**64)
    are harmless even when a caller hands them to the scheduler directly."""
    server = make_server()
    good = [_request(server, p, Events()) for p in PROMPTS]
    odd = _request(server, PROMPTS[0], Events(), n=2, **bad_kw)
    _run(server, good[:2] + [odd] + good[2:])
    _check_good(good, alone)
    assert odd.sink.kinds == {"token", "finish", "done"}


class ExplodingParams(SamplingParams):
    """Sampling settings whose logit processing raises after ``after`` tokens."""

    def __init__(self, after: int):
        super().__init__(temperature=0)
        self.after, self.calls = after, 0

    @property
    def logit_bias(self):
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("secret internal detail /srv/models")
        return {}

    @logit_bias.setter
    def logit_bias(self, value):
        pass


def _assert_failed_alone(bad, good, alone, server):
    assert bad.sink.kinds <= {"token", "error"} and bad.sink.events[-1]["type"] == "error"
    message = bad.sink.events[-1]["message"]
    assert "secret" not in message and "/srv" not in message and "error reference" in message
    _check_good(good, alone)
    assert server.scheduler.load["running"] == 0


@pytest.mark.parametrize("after", [0, 5], ids=["at-prefill", "mid-decode"])
def test_a_request_whose_sampling_raises_fails_alone(make_server, alone, after):
    server = make_server()
    good = [_request(server, p, Events()) for p in PROMPTS]
    bad = _request(server, PROMPTS[1], Events(), n=2, params=ExplodingParams(after))
    _run(server, good[:1] + [bad] + good[1:])
    _assert_failed_alone(bad, good, alone, server)


def test_a_request_whose_decode_state_cannot_be_built_fails_alone(make_server, alone):
    server = make_server()
    good = [_request(server, p, Events()) for p in PROMPTS]
    bad = _request(server, PROMPTS[1], Events(), params=SamplingParams(temperature=1.0), seed="secret")
    _run(server, [bad] + good)
    _assert_failed_alone(bad, good, alone, server)


def test_a_raising_sink_only_cancels_its_own_request(make_server, alone):
    server = make_server()
    good = [_request(server, p, Events()) for p in PROMPTS]

    def broken(event):
        raise RuntimeError("client loop gone")

    bad = _request(server, PROMPTS[0], Events())
    bad.sink = broken
    server.scheduler.submit_all([bad] + good)
    server.scheduler.start()
    assert all(r.sink.finished.wait(60) for r in good)
    _check_good(good, alone)
    assert bad.cancelled.is_set()


def test_a_prompt_that_fails_the_prefill_fails_alone(make_server, alone):
    """A token id outside the embedding makes the prefill forward raise: the other requests
    admitted with it are prefilled again without it."""
    server = make_server()
    good = [_request(server, p, Events()) for p in PROMPTS]
    bad = _request(server, PROMPTS[0], Events())
    bad.prompt_ids = [1, 2, 10**6]
    _run(server, good[:1] + [bad] + good[1:])
    _assert_failed_alone(bad, good, alone, server)


def test_a_failed_shared_step_reaches_every_request_including_those_being_admitted(make_server, monkeypatch):
    """Only the shared decode step (or cache surgery) may fail the whole batch, and then every
    affected request hears back: here the merge fails while a second group is being admitted."""
    from tunesmith.serve import kv

    server = make_server()
    first = [_request(server, p, Events()) for p in PROMPTS[:2]]
    server.scheduler.submit_all(first)
    server.scheduler.start()
    assert all(_wait_tokens(r.sink, 2) for r in first)

    def broken_merge(*args):
        raise RuntimeError("secret merge failure")

    monkeypatch.setattr(kv, "merge", broken_merge)
    late = _request(server, PROMPTS[2], Events())
    server.scheduler.submit(late)
    for r in first + [late]:
        assert r.sink.finished.wait(60) and r.sink.events[-1]["type"] in ("error", "done")
    assert late.sink.events[-1]["type"] == "error" and "secret" not in late.sink.events[-1]["message"]
    monkeypatch.undo()
    again = _request(server, PROMPTS[2], Events())  # the server goes on
    server.scheduler.submit(again)
    assert again.sink.finished.wait(60) and again.sink.events[-1]["type"] == "done"


def _wait_tokens(sink, n, timeout=30):
    import time

    end = time.monotonic() + timeout
    while len(sink.tokens) < n and not sink.finished.is_set() and time.monotonic() < end:
        time.sleep(0.002)
    return len(sink.tokens) >= n


def test_a_request_whose_model_was_removed_while_waiting_is_a_404_alone(make_server, alone):
    # The client's model went away between parsing and admission: a client-visible 404
    # (model_not_found), not a server error; the requests around it are untouched.
    from tunesmith.serve.respond import event_error

    server = make_server()
    good = [_request(server, p, Events()) for p in PROMPTS]
    orphan = _request(server, PROMPTS[1], Events(), adapter="removed-adapter")
    _run(server, good[:1] + [orphan] + good[1:])
    _check_good(good, alone)
    err = event_error(orphan.sink.events[-1])
    assert (err.status, err.code, err.type) == (404, "model_not_found", "invalid_request_error")
