"""Scheduler events -> OpenAI response bodies (non-streaming) and server-sent-event chunks.

``meta`` (built by the app) holds the response ``id``, ``created``, ``model``, ``prompt_tokens``
(each prompt counted once, however many choices ``n`` it has, as OpenAI counts), ``n``,
``include_usage``, ``logprobs`` and the model's ``tokenizer``. Completion tokens are every token
the model generated for a choice, the end-of-turn token included (it was computed and sampled).
Choices are numbered ``prompt_index * n + sequence_index``.
"""

from __future__ import annotations

import json


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
        return {"prompt_tokens": self.meta["prompt_tokens"], "completion_tokens": done,
                "total_tokens": self.meta["prompt_tokens"] + done}

    def result(self) -> dict:
        m, choices = self.meta, []
        for i in sorted(self.reason):
            if self.kind == "chat":
                lp = {"content": self.logprobs.get(i, []), "refusal": None} if m["logprobs"] else None
                choices.append({"index": i, "message": {"role": "assistant", "content": self.text.get(i, ""),
                                                        "refusal": None},
                                "logprobs": lp, "finish_reason": self.reason[i]})
            else:
                text = self.text.get(i, "")
                if m.get("echo"):
                    text = m["echo"][i // m["n"]] + text
                lp = self.logprobs[i].body if m["logprobs"] and i in self.logprobs else None
                choices.append({"text": text, "index": i, "logprobs": lp, "finish_reason": self.reason[i]})
        obj = "chat.completion" if self.kind == "chat" else "text_completion"
        return {"id": m["id"], "object": obj, "created": m["created"], "model": m["model"],
                "system_fingerprint": None, "choices": choices, "usage": self.usage()}


async def _events(queue, n_jobs: int):
    """Yield (k, event) until every job is done; stop after an error event."""
    pending = n_jobs
    while pending:
        k, event = await queue.get()
        yield k, event
        if event["type"] == "error":
            return
        pending -= event["type"] == "done"


def _error_chunk(message: str) -> str:
    return sse({"error": {"message": message, "type": "server_error", "param": None, "code": None}})


async def chat_chunks(queue, n_jobs: int, meta: dict):
    """SSE lines for a streaming chat completion (role chunk, content deltas, finish, usage, [DONE])."""
    base = {"id": meta["id"], "object": "chat.completion.chunk", "created": meta["created"],
            "model": meta["model"], "system_fingerprint": None}
    usage_field = {"usage": None} if meta["include_usage"] else {}
    collector = Collector("chat", {**meta, "logprobs": False})
    for i in range(meta["n"]):
        yield sse({**base, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}], **usage_field})
    async for k, event in _events(queue, n_jobs):
        if event["type"] == "error":
            yield _error_chunk(event["message"])
            return
        collector.add(k, event)
        i = k * meta["n"] + event.get("index", 0)
        if event["type"] == "token":
            lp = {"content": [chat_logprob(meta["tokenizer"], event["choice"])], "refusal": None} \
                if meta["logprobs"] else None
            if event["text"] or lp:
                yield sse({**base, "choices": [{"index": i, "delta": {"content": event["text"]}, "logprobs": lp,
                                                "finish_reason": None}], **usage_field})
        elif event["type"] == "finish":
            yield sse({**base, "choices": [{"index": i, "delta": {}, "logprobs": None,
                                            "finish_reason": event["reason"]}], **usage_field})
    if meta["include_usage"]:
        yield sse({**base, "choices": [], "usage": collector.usage()})
    yield "data: [DONE]\n\n"


async def completion_chunks(queue, n_jobs: int, meta: dict):
    """SSE lines for a streaming legacy completion."""
    base = {"id": meta["id"], "object": "text_completion", "created": meta["created"], "model": meta["model"],
            "system_fingerprint": None}
    usage_field = {"usage": None} if meta["include_usage"] else {}
    collector = Collector("text", {**meta, "logprobs": False})
    offsets: dict[int, _LegacyLogprobs] = {}
    if meta.get("echo"):
        for i in range(len(meta["echo"]) * meta["n"]):
            yield sse({**base, "choices": [{"text": meta["echo"][i // meta["n"]], "index": i, "logprobs": None,
                                            "finish_reason": None}], **usage_field})
    async for k, event in _events(queue, n_jobs):
        if event["type"] == "error":
            yield _error_chunk(event["message"])
            return
        collector.add(k, event)
        i = k * meta["n"] + event.get("index", 0)
        if event["type"] == "token":
            lp = None
            if meta["logprobs"]:
                acc = offsets.setdefault(i, _LegacyLogprobs())
                one = _LegacyLogprobs(acc.offset)
                one.add(meta["tokenizer"], event["choice"])
                acc.offset = one.offset
                lp = one.body
            if event["text"] or lp:
                yield sse({**base, "choices": [{"text": event["text"], "index": i, "logprobs": lp,
                                                "finish_reason": None}], **usage_field})
        elif event["type"] == "finish":
            yield sse({**base, "choices": [{"text": "", "index": i, "logprobs": None,
                                            "finish_reason": event["reason"]}], **usage_field})
    if meta["include_usage"]:
        yield sse({**base, "choices": [], "usage": collector.usage()})
    yield "data: [DONE]\n\n"
