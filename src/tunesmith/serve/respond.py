"""Scheduler events -> OpenAI response bodies (non-streaming) and server-sent-event chunks.

``meta`` (built by the app) holds the response ``id``, ``created``, ``model``, ``prompt_tokens``
(each prompt counted once, however many choices ``n`` it has, as OpenAI counts), ``n``,
``include_usage``, ``logprobs`` and the model's ``tokenizer``. Completion tokens are every token
the model generated for a choice, the end-of-turn token included (it was computed and sampled).
Choices are numbered ``prompt_index * n + sequence_index``.
"""

from __future__ import annotations

import json

from .protocol import APIError


def sse(obj) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def _token_text(tokenizer, token: int) -> str:
    return tokenizer.decode([token], skip_special_tokens=False, clean_up_tokenization_spaces=False)


def chat_logprob(tokenizer, choice) -> dict:
    """One entry of ``choices[].logprobs.content`` (OpenAI chat format)."""

    def item(tok, lp):
        s = _token_text(tokenizer, tok)
        return {"token": s, "logprob": lp, "bytes": list(s.encode("utf-8"))}

    out = item(choice.token, choice.logprob)
    out["top_logprobs"] = [item(t, lp) for t, lp in (choice.top or [])]
    return out


class _LegacyLogprobs:
    """The legacy completions ``logprobs`` object, built token by token."""

    def __init__(self, offset: int = 0):
        self.offset = offset
        self.body = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}

    def add(self, tokenizer, choice) -> None:
        s = _token_text(tokenizer, choice.token)
        self.body["tokens"].append(s)
        self.body["token_logprobs"].append(choice.logprob)
        self.body["top_logprobs"].append({_token_text(tokenizer, t): lp for t, lp in (choice.top or [])})
        self.body["text_offset"].append(self.offset)
        self.offset += len(s)


class Collector:
    """Accumulates events of all choices into one non-streaming response body."""

    def __init__(self, kind: str, meta: dict):
        self.kind, self.meta = kind, meta
        self.text: dict[int, str] = {}
        self.reason: dict[int, str] = {}
        self.tokens: dict[int, int] = {}
        self.logprobs: dict[int, object] = {}

    def add(self, k: int, event: dict) -> None:
        if event["type"] not in ("token", "finish"):
            return
        i = k * self.meta["n"] + event["index"]
        if event["type"] == "finish":
            self.reason[i], self.tokens[i] = event["reason"], event["completion_tokens"]
            return
        self.text[i] = self.text.get(i, "") + event["text"]
        if self.meta["logprobs"]:
            tok = self.meta["tokenizer"]
            if self.kind == "chat":
                self.logprobs.setdefault(i, []).append(chat_logprob(tok, event["choice"]))
            else:
                self.logprobs.setdefault(i, _LegacyLogprobs()).add(tok, event["choice"])

    def usage(self) -> dict:
        done = sum(self.tokens.values())
        return {
            "prompt_tokens": self.meta["prompt_tokens"],
            "completion_tokens": done,
            "total_tokens": self.meta["prompt_tokens"] + done,
        }

    def result(self) -> dict:
        m, choices = self.meta, []
        for i in sorted(self.reason):
            if self.kind == "chat":
                lp = {"content": self.logprobs.get(i, []), "refusal": None} if m["logprobs"] else None
                choices.append(
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": self.text.get(i, ""), "refusal": None},
                        "logprobs": lp,
                        "finish_reason": self.reason[i],
                    }
                )
            else:
                text = self.text.get(i, "")
                if m.get("echo"):
                    text = m["echo"][i // m["n"]] + text
                lp = self.logprobs[i].body if m["logprobs"] and i in self.logprobs else None
                choices.append({"text": text, "index": i, "logprobs": lp, "finish_reason": self.reason[i]})
        obj = "chat.completion" if self.kind == "chat" else "text_completion"
        return {
            "id": m["id"],
            "object": obj,
            "created": m["created"],
            "model": m["model"],
            "system_fingerprint": None,
            "choices": choices,
            "usage": self.usage(),
        }


async def _events(queue, n_jobs: int):
    """Yield (k, event) until every job is done; stop after an error event."""
    pending = n_jobs
    while pending:
        k, event = await queue.get()
        yield k, event
        if event["type"] == "error":
            return
        pending -= event["type"] == "done"


def event_error(event: dict) -> APIError:
    """A scheduler error event as an API error: the client's (``status`` < 500, e.g. the model
    was removed while the request waited: 404) or the server's (500)."""
    status = event.get("status", 500)
    kind = "invalid_request_error" if status < 500 else "server_error"
    return APIError(status, event["message"], type=kind, code=event.get("code"))


def _error_chunk(event: dict) -> str:
    return sse(event_error(event).body())


async def _stream(queue, n_jobs: int, meta: dict, obj: str, opening: list[dict], token_choice, finish_choice):
    """The SSE loop shared by both endpoints: ``opening`` choices, then one chunk per token event
    that ``token_choice(i, event)`` turns into a choice (None: nothing to send), one per finish,
    the usage chunk when asked for, ``[DONE]``; an error event ends the stream with an error."""
    base = {
        "id": meta["id"],
        "object": obj,
        "created": meta["created"],
        "model": meta["model"],
        "system_fingerprint": None,
    }
    usage_field = {"usage": None} if meta["include_usage"] else {}
    collector = Collector("stream", {**meta, "logprobs": False})
    for choice in opening:
        yield sse({**base, "choices": [choice], **usage_field})
    async for k, event in _events(queue, n_jobs):
        if event["type"] == "error":
            yield _error_chunk(event)
            return
        collector.add(k, event)
        i = k * meta["n"] + event.get("index", 0)
        choice = (
            token_choice(i, event)
            if event["type"] == "token"
            else finish_choice(i, event["reason"])
            if event["type"] == "finish"
            else None
        )
        if choice is not None:
            yield sse({**base, "choices": [choice], **usage_field})
    if meta["include_usage"]:
        yield sse({**base, "choices": [], "usage": collector.usage()})
    yield "data: [DONE]\n\n"


def chat_chunks(queue, n_jobs: int, meta: dict):
    """SSE lines for a streaming chat completion (role chunk, content deltas, finish, usage, [DONE])."""
    opening = [
        {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        for i in range(meta["n"])
    ]

    def token(i, event):
        lp = (
            {"content": [chat_logprob(meta["tokenizer"], event["choice"])], "refusal": None}
            if meta["logprobs"]
            else None
        )
        if not (event["text"] or lp):
            return None
        return {"index": i, "delta": {"content": event["text"]}, "logprobs": lp, "finish_reason": None}

    def finish(i, reason):
        return {"index": i, "delta": {}, "logprobs": None, "finish_reason": reason}

    return _stream(queue, n_jobs, meta, "chat.completion.chunk", opening, token, finish)


def completion_chunks(queue, n_jobs: int, meta: dict):
    """SSE lines for a streaming legacy completion (echoed prompts first when asked)."""
    n, echo = meta["n"], meta.get("echo") or []
    opening = [
        {"text": echo[i // n], "index": i, "logprobs": None, "finish_reason": None}
        for i in range(len(echo) * n)
    ]
    offsets: dict[int, int] = {}

    def token(i, event):
        lp = None
        if meta["logprobs"]:  # one token's legacy logprobs, text_offset continuing the choice's text
            one = _LegacyLogprobs(offsets.get(i, 0))
            one.add(meta["tokenizer"], event["choice"])
            offsets[i], lp = one.offset, one.body
        if not (event["text"] or lp):
            return None
        return {"text": event["text"], "index": i, "logprobs": lp, "finish_reason": None}

    def finish(i, reason):
        return {"text": "", "index": i, "logprobs": None, "finish_reason": reason}

    return _stream(queue, n_jobs, meta, "text_completion", opening, token, finish)
