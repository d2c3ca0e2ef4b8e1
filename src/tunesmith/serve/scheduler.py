"""The generation thread: continuous batching over one model with a shared, left-padded KV cache.

One background thread owns the model. Each iteration it

1. applies queued control actions (adapter load/unload) between forward passes;
2. drops sequences whose client went away;
3. admits waiting requests (FIFO) while the batch has room: their prompts are prefilled together
   (left-padded, one forward pass, logits of the last position only) and the resulting KV cache
   is merged into the running batch (``kv.merge``), so new requests join mid-flight;
4. runs one decode step for every running sequence (one token each) and samples per sequence.

Failures are contained to the request that caused them: anything that goes wrong in one
request's own work -- building its decode state (seed, stop strings), processing its logits,
sampling, detokenizing, its sink -- ends that request alone with an error event and drops its
rows from the batch, while the others carry on. A failed prefill forward pass ends only the
requests it was admitting (the running batch's cache is untouched until the merge). Only a
failure of the shared decode step (or of the cache surgery) ends the whole batch, and then every
request in it, the ones being admitted included, hears back. Error messages sent to clients name
a reference that is logged with the traceback, never the exception text.

Results go out through each request's ``sink`` callback, which must not block (the HTTP layer
hands them to its event loop with ``call_soon_threadsafe``): a slow client only grows its own
queue and never holds up the batch. Several LoRA adapters share the batch through PEFT's
mixed-adapter forward (``adapter_names=[...]``, one entry per row; ``"__base__"`` = no adapter).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import kv
from .sampling import Choice, SamplingParams, is_greedy, select
from .text import TextStream

log = logging.getLogger("tunesmith.serve")
BASE = "__base__"


@dataclass
class GenRequest:
    """One API request: ``n`` sequences continuing the same prompt.

    ``sink(event)`` receives dicts, in order, from the scheduler thread:
    ``{"type": "token", "index", "text", "choice": Choice}`` for every generated token (``text`` is
    the newly releasable text, possibly empty), ``{"type": "finish", "index", "reason",
    "completion_tokens"}`` once per sequence, then ``{"type": "done"}``; or ``{"type": "error",
    "message"}`` (terminal; a client error also carries its HTTP ``status`` and ``code``, else the
    server failed).
    """

    prompt_ids: list[int]
    max_tokens: int
    sink: Callable[[dict], None]
    tokenizer: object
    stop_ids: list[int]
    adapter: str = BASE
    n: int = 1
    params: SamplingParams = field(default_factory=SamplingParams)
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)

    def cancel(self) -> None:
        self.cancelled.set()


class _Seq:
    """Decode state of one sequence in the running batch. May raise (e.g. a bad seed type): the
    caller fails that request alone."""

    def __init__(self, req: GenRequest, index: int):
        self.req, self.index = req, index
        self.pos = len(req.prompt_ids)  # tokens of this sequence held in the KV cache
        self.generated: list[int] = []
        self.counts: dict[int, int] = collections.Counter()
        self.stream = TextStream(req.tokenizer, req.stop)
        self.generator = None
        if not is_greedy(req.params):
            self.generator = torch.Generator()
            seed = req.seed + index if req.seed is not None else int(torch.randint(0, 2**62, (1,)))
            # torch takes an unsigned 64-bit seed and wraps negatives the same way, so any int
            # seed (and seed + index past 2**63 - 1) is valid and seeds as before.
            self.generator.manual_seed(seed % 2**64)
        self.done = False


class Overloaded(Exception):
    """The waiting queue is full for now (transient: retry later)."""


class NeverFits(ValueError):
    """A request the scheduler could never admit, however idle (a client error: do not retry).

    ``param`` names the request field to change."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


_FAILED = "The server failed while generating this response (error reference {ref}); it has been logged."


class Scheduler:
    """Owns ``model`` on its own thread. ``submit`` is thread-safe; so is ``call``."""

    def __init__(
        self,
        model,
        *,
        device: torch.device,
        context_length: int,
        max_batch: int = 16,
        max_waiting: int = 256,
        max_prefill_tokens: int = 4096,
    ):
        """``max_batch``: sequences decoded together; ``max_waiting``: sequences (requests x n)
        the queue holds before ``submit`` raises Overloaded."""
        self.model, self.device = model, device
        self.context_length, self.max_batch = context_length, max_batch
        self.max_waiting, self.max_prefill_tokens = max_waiting, max_prefill_tokens
        self.use_adapter_names = False  # set once the model is a PeftModel
        self.loaded: set[str] = {BASE}  # adapter names the model can run now (changed on this thread)
        self._waiting: collections.deque[GenRequest] = collections.deque()
        self._actions: collections.deque = collections.deque()
        self._cv = threading.Condition()
        self._active: list[_Seq] = []
        self._admitting: list[GenRequest] = []  # taken off the queue, not yet in the batch
        self._cache = self._mask = None
        self._stop = False
        self._thread: threading.Thread | None = None
        self.steps = 0

    # ---- thread-safe entry points -------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tunesmith-serve", daemon=True)
            self._thread.start()

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def submit(self, req: GenRequest) -> None:
        self.submit_all([req])

    def submit_all(self, reqs: list[GenRequest]) -> None:
        """Queue ``reqs`` together or not at all.

        Raises NeverFits when they could not be admitted even by an idle server (a request's
        ``n`` above ``max_batch``; more sequences in all than the queue holds), Overloaded when
        they fit but the queue has no room right now."""
        self.check_fits([r.n for r in reqs])
        rows = sum(r.n for r in reqs)
        with self._cv:
            waiting = sum(r.n for r in self._waiting)
            if waiting + rows > self.max_waiting:
                raise Overloaded(f"{waiting} sequences are already waiting")
            self._waiting.extend(reqs)
            self._cv.notify_all()

    def check_fits(self, ns: list[int]) -> None:
        """Raise NeverFits unless requests with these ``n`` could ever be admitted together."""
        if any(n > self.max_batch for n in ns):
            raise NeverFits(f"n: at most {self.max_batch} choices per request on this server", "n")
        if sum(ns) > self.max_waiting:
            raise NeverFits(
                f"this request asks for {sum(ns)} sequences (prompts x n); this server "
                f"accepts at most {self.max_waiting} per request",
                "prompt",
            )

    def call(self, fn: Callable[[], object], timeout: float = 600) -> object:
        """Run ``fn()`` on the generation thread between steps; return its result or raise its error."""
        if self._thread is None or threading.current_thread() is self._thread:
            return fn()
        done, box = threading.Event(), {}

        def action():
            try:
                box["value"] = fn()
            except BaseException as exc:  # handed back to the caller's thread
                box["error"] = exc
            done.set()

        with self._cv:
            self._actions.append(action)
            self._cv.notify_all()
        if not done.wait(timeout):
            raise TimeoutError("the generation thread did not run the action in time")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def adapters_in_use(self) -> set[str]:
        """Adapters of waiting and running requests; exact when called on the generation thread
        (e.g. inside ``call``), where no request is between the queue and the batch."""
        with self._cv:
            names = {r.adapter for r in self._waiting}
        return names | {s.req.adapter for s in list(self._active)}

    @property
    def load(self) -> dict:
        return {
            "running": len(self._active),
            "waiting": len(self._waiting) + len(self._admitting),
            "steps": self.steps,
        }

    # ---- the generation thread ------------------------------------------------------------------
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cv:
                while not (self._stop or self._actions or self._waiting or self._active):
                    self._cv.wait(timeout=1.0)
                if self._stop:
                    break
                actions = list(self._actions)
                self._actions.clear()
            for action in actions:
                action()
            try:
                self._drop_cancelled()
                self._admit()
                if self._active:
                    self._decode()
            except Exception:  # the shared step failed: its requests end, the server goes on
                ref = uuid.uuid4().hex[:12]
                log.exception("generation step failed (error reference %s)", ref)
                self._fail_all(_FAILED.format(ref=ref))
        self._fail_all("the server is shutting down")

    def _fail_all(self, message: str) -> None:
        """End every running request and every one being admitted (and, when stopping, the
        waiting ones) with ``message``; the batch is emptied."""
        reqs = {id(s.req): s.req for s in self._active}
        reqs.update({id(r): r for r in self._admitting})
        with self._cv:
            reqs.update({id(r): r for r in self._waiting} if self._stop else {})
            if self._stop:
                self._waiting.clear()
        for req in reqs.values():
            _emit(req, {"type": "error", "message": message})
        self._active, self._admitting, self._cache, self._mask = [], [], None, None

    def _fail_one(self, req: GenRequest, what: str) -> None:
        """End ``req`` alone after its own work failed (call from an ``except`` block); its rows
        are dropped from the batch by the caller or, via ``cancelled``, at the next step."""
        ref = uuid.uuid4().hex[:12]
        log.exception("request failed while %s (error reference %s)", what, ref)
        _emit(req, {"type": "error", "message": _FAILED.format(ref=ref)})
        req.cancel()

    def _keep(self, keep: list[int]) -> None:
        self._active = [self._active[i] for i in keep]
        self._cache, self._mask = kv.select(self._cache, self._mask, keep)

    def _drop_cancelled(self) -> None:
        with self._cv:
            for r in [r for r in self._waiting if r.cancelled.is_set()]:
                self._waiting.remove(r)
        keep = [i for i, s in enumerate(self._active) if not s.req.cancelled.is_set()]
        if len(keep) != len(self._active):
            self._keep(keep)

    def _admit(self) -> None:
        """Move waiting requests (FIFO, while rows and prefill tokens allow) into the batch. They
        are listed in ``_admitting`` from the moment they leave the queue, so a failure before
        they join the batch still reaches them (``_fail_all``)."""
        batch = self._admitting = []
        with self._cv:
            room = self.max_batch - len(self._active)
            longest = 0
            while self._waiting and self._waiting[0].n <= room:
                req = self._waiting[0]
                longest2 = max(longest, len(req.prompt_ids))
                rows = sum(r.n for r in batch) + req.n
                if batch and rows * longest2 > self.max_prefill_tokens:
                    break
                self._waiting.popleft()
                if req.adapter not in self.loaded:  # its model was removed after the request was parsed
                    _emit(
                        req,
                        {
                            "type": "error",
                            "message": "The model was removed while the request waited.",
                            "status": 404,
                            "code": "model_not_found",
                        },
                    )
                    continue
                batch.append(req)
                room -= req.n
                longest = longest2
        if batch:
            self._prefill(batch)
        self._admitting = []

    def _forward(self, input_ids, mask, position_ids, cache, adapters: list[str]):
        extra = {"adapter_names": adapters} if self.use_adapter_names else {}
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            **extra,
        )
        return out.logits[:, -1, :].float(), out.past_key_values

    def _new_seqs(self, batch: list[GenRequest]) -> list[_Seq]:
        """Decode state for every row of ``batch``; a request whose state cannot be built fails alone."""
        seqs: list[_Seq] = []
        for req in batch:
            try:
                rows = [_Seq(req, i) for i in range(req.n)]
            except Exception:
                self._fail_one(req, "preparing its decode state")
                continue
            seqs.extend(rows)
        return seqs

    def _prefill(self, batch: list[GenRequest]) -> None:
        """Prefill ``batch`` and merge it into the running batch (see ``_prefill_rows``)."""
        seqs = self._new_seqs(batch)
        if seqs:
            self._prefill_rows(seqs)

    def _prefill_rows(self, seqs: list[_Seq]) -> None:
        """One forward pass over the prompts of ``seqs``, merged into the running batch, then the
        first token of each. If the pass fails, the running batch is untouched (its cache is only
        merged after): with several requests each is retried alone, so only a request whose own
        prompt fails the model is failed."""
        try:
            ids, mask, position_ids = self._prompt_tensors(seqs)
            logits, cache = self._forward(ids, mask, position_ids, kv.empty(), [s.req.adapter for s in seqs])
        except Exception:
            reqs = list({id(s.req): s.req for s in seqs}.values())
            if len(reqs) == 1:
                self._fail_one(reqs[0], "prefilling its prompt")
            else:
                for req in reqs:
                    self._prefill_rows([s for s in seqs if s.req is req])
            return
        self._cache, self._mask = kv.merge(self._cache, self._mask, cache, mask)
        self._active.extend(seqs)
        self._sample(seqs, logits)

    def _prompt_tensors(self, seqs: list[_Seq]):
        """(input_ids, attention_mask, position_ids) of the prompts, left-padded, on the device."""
        longest = max(len(s.req.prompt_ids) for s in seqs)
        ids = torch.zeros(len(seqs), longest, dtype=torch.long)
        mask = torch.zeros(len(seqs), longest, dtype=torch.long)
        for row, s in enumerate(seqs):
            p = s.req.prompt_ids
            ids[row, longest - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[row, longest - len(p) :] = 1
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), position_ids.to(self.device)

    def _decode(self) -> None:
        last = torch.tensor([[s.generated[-1]] for s in self._active], dtype=torch.long, device=self.device)
        positions = torch.tensor([[s.pos] for s in self._active], dtype=torch.long, device=self.device)
        mask = torch.cat([self._mask, self._mask.new_ones(len(self._active), 1)], dim=1)
        logits, self._cache = self._forward(
            last, mask, positions, self._cache, [s.req.adapter for s in self._active]
        )
        self._mask = mask
        for s in self._active:
            s.pos += 1
        self.steps += 1
        self._sample(self._active, logits)

    def _sample(self, seqs: list[_Seq], logits: torch.Tensor) -> None:
        """Pick one token per sequence (rows of ``logits`` match ``seqs``), emit, retire the
        finished. A request whose row fails here gets an error and all its rows leave the batch;
        the other rows are unaffected."""
        logits = logits.cpu()
        failed: set[int] = set()
        for row, s in enumerate(seqs):
            if id(s.req) in failed:
                continue
            try:
                self._step(s, logits[row])
            except Exception:
                failed.add(id(s.req))
                self._fail_one(s.req, "sampling its next token")
        if failed or any(s.done for s in seqs):
            self._retire(failed)

    def _step(self, s: _Seq, logits: torch.Tensor) -> None:
        """Select, record and emit one token of ``s``; mark it done when it finished."""
        choice: Choice = select(logits, s.req.params, s.counts, s.generator)
        tok = choice.token
        s.generated.append(tok)
        s.counts[tok] += 1
        reason = None
        if tok in s.req.stop_ids:
            text, reason = s.stream.finish(), "stop"
        else:
            text, hit = s.stream.push(tok)
            if hit:
                reason = "stop"
            elif len(s.generated) >= s.req.max_tokens or s.pos + 1 >= self.context_length:
                text, reason = text + s.stream.finish(), "length"
        _emit(s.req, {"type": "token", "index": s.index, "text": text, "choice": choice})
        if reason:
            s.done = True
            _emit(
                s.req,
                {"type": "finish", "index": s.index, "reason": reason, "completion_tokens": len(s.generated)},
            )

    def _retire(self, failed: set[int]) -> None:
        """Drop finished rows and every row of a ``failed`` request; "done" for completed requests."""
        completed = {id(s.req): s.req for s in self._active if s.done and id(s.req) not in failed}
        self._keep([i for i, s in enumerate(self._active) if not (s.done or id(s.req) in failed)])
        # "done" goes out after the rows left the batch, so a client that has its answer
        # never sees its request still counted as running.
        for req in completed.values():
            if not any(s.req is req for s in self._active):
                _emit(req, {"type": "done"})


def _emit(req: GenRequest, event: dict) -> None:
    try:
        req.sink(event)
    except Exception:  # the client's loop is gone: stop generating for it
        req.cancel()
