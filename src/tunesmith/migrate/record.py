"""``tunesmith openai record``: a model's answers to a held-out set, kept as the golden record.

The held-out file is read as ``tunesmith eval`` reads it (:func:`tunesmith.eval.data.load_eval_data`):
a chat row's prompt is its messages before the last assistant turn and its reference that turn;
a chat row without an assistant turn (the RFT shape) or a prompt-only row is a prompt with no
reference. For each row one ``chat.completions.create`` is sent with exactly the parameters
stored in the output row (``request``: model, messages, temperature, max_tokens, seed, top_p),
in the format :mod:`tunesmith.eval.recorded` reads.

The output is append-only and resumable: a row is written (and flushed to disk) as soon as its
answer arrives; a restart skips the rows already recorded (matched by row index and the row's
content hash) and drops a last line cut off by a kill. Transient failures (429, 5xx, a dropped
connection) are retried with backoff; any other error stops with one line naming the row.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError, TunesmithError
from ..eval.recorded import match_answers, read_recorded, row_sha256
from .client import with_retries


@dataclass
class RecordOptions:
    """The request parameters sent for every row, and how hard to retry."""

    model: str
    temperature: float = 0.0
    max_tokens: int = 256
    seed: int | None = 0
    top_p: float | None = None
    attempts: int = 6
    backoff: float = 1.0

    def request(self, messages: list[dict]) -> dict:
        """The ``chat.completions.create`` keyword arguments for ``messages``."""
        req = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.seed is not None:
            req["seed"] = self.seed
        if self.top_p is not None:
            req["top_p"] = self.top_p
        return req


@dataclass
class RecordResult:
    recorded: int
    already: int
    total: int


def _prompt_messages(item) -> list[dict]:
    if item.prompt is None:
        raise DataError(
            "a raw-text row has no prompt to ask a chat model; record needs chat "
            "rows (messages) or prompt rows",
            path=item.source,
        )
    if isinstance(item.prompt, str):
        return [{"role": "user", "content": item.prompt}]
    return [dict(m) for m in item.prompt]


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line without its newline (a write interrupted by a kill) off ``path``."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _check_same_request(recorded, options: RecordOptions, out: Path) -> None:
    """A resumed recording must ask what the recorded rows asked (bar the messages)."""
    have = recorded.request
    want = {k: v for k, v in options.request([]).items() if k != "messages"}
    for key in sorted(set(have) | set(want)):
        if have.get(key) != want.get(key):
            raise TunesmithError(
                f"{out} was recorded with {key}={have.get(key)!r}; this run asks for "
                f"{key}={want.get(key)!r}: use the same options, or another --out"
            )


def _response_fields(resp) -> dict:
    choice = resp.choices[0]
    message = choice.message
    out = {
        "id": resp.id,
        "model": resp.model,
        "created": resp.created,
        "system_fingerprint": getattr(resp, "system_fingerprint", None),
        "finish_reason": choice.finish_reason,
        "usage": resp.usage.model_dump(mode="json") if resp.usage else None,
    }
    if getattr(message, "tool_calls", None):
        out["tool_calls"] = [c.model_dump(mode="json") for c in message.tool_calls]
    if getattr(message, "refusal", None):
        out["refusal"] = message.refusal
    return out


def record(
    client,
    data_path: str,
    out_path: str | Path,
    options: RecordOptions,
    *,
    limit: int | None = None,
    log: Callable[[str], None] = lambda _: None,
    sleep: Callable[[float], object] = time.sleep,
) -> RecordResult:
    """Ask ``options.model`` every not-yet-recorded row of ``data_path``; append each answer to
    ``out_path``. Returns how many rows were recorded now, already, and in all."""
    import json

    from ..eval.data import load_eval_data

    data = load_eval_data(data_path, limit)
    if data.pairs:
        raise DataError(
            "holds preference pairs; record needs chat rows (messages) or prompt rows", path=str(data_path)
        )
    prompts = [_prompt_messages(item) for item in data.items]
    out = Path(out_path)
    done: set[int] = set()
    if out.is_file():
        _drop_torn_tail(out)
        recorded = read_recorded(out)
        if recorded.rows:
            match_answers(recorded, data.items, str(data_path))  # same rows, or a one-line error
            _check_same_request(recorded, options, out)
            done = {i for i in recorded.rows if i < len(data.items)}
    out.parent.mkdir(parents=True, exist_ok=True)
    new = 0
    with open(out, "a", encoding="utf-8") as f:
        for index, (item, messages) in enumerate(zip(data.items, prompts)):
            if index in done:
                continue
            req = options.request(messages)
            resp = with_retries(
                lambda req=req: client.chat.completions.create(**req),
                what=f"{item.source}",
                attempts=options.attempts,
                backoff=options.backoff,
                sleep=sleep,
            )
            row = {
                "index": index,
                "row_sha256": row_sha256(item.row),
                "source": item.source,
                "request": req,
                "response": _response_fields(resp),
                "answer": resp.choices[0].message.content or "",
                "reference": item.target.get("reference"),
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            new += 1
            log(f"{item.source}: recorded")
    return RecordResult(new, len(done), len(data.items))
