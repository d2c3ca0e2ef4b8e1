"""The OpenAI inference endpoints as plain functions over an :class:`InferenceServer`.

Each handler is ``async def handler(server, request, ...)``: it answers one request for
``server`` (a dict or a Response) or raises :class:`~.protocol.APIError`. :func:`answer` runs a
handler and turns what it raised into the answer: an APIError into its envelope, anything
unexpected into a logged 500. serve's own routes (:func:`.app.build_router`, which adds the API
key check) and the jobs service (:mod:`tunesmith.jobs.infer`, which has authenticated the caller
itself) call them the same way: ``await answer(request, chat_completions, server, request)``.

Handlers: :func:`health`, :func:`list_models`, :func:`get_model`, :func:`chat_completions`,
:func:`completions` (both streaming with server-sent events and non-streaming),
:func:`add_adapter` and :func:`delete_adapter` (adapters under an adapter root).

Error contract (docs/hardening.md): every answer is JSON in OpenAI's envelope. Client mistakes
are 4xx with ``type: invalid_request_error`` -- including requests that could never be served
(400 naming the limit); only transient overload is a 503. A 500 (``server_error``) means the
server itself failed: its message is generic with a reference, the details go to the log, and no
message ever contains a server path.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
import uuid
from pathlib import Path

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from .. import httpjson
from ..errors import ModelError
from .protocol import APIError, ChatCompletionRequest, CompletionRequest, from_validation_error
from .respond import Collector, chat_chunks, completion_chunks, event_error

log = logging.getLogger("tunesmith.serve")
MAX_PATH_CHARS = 1024  # adapter paths: far above any real one, far below the OS limits
MAX_BODY_BYTES = httpjson.MAX_BODY_BYTES


# -- answering ----------------------------------------------------------------------------------------
async def answer(request: Request, handler, *args, api_key: str | None = None):
    """``await handler(*args)``, after checking ``api_key`` (when given) against the request's
    bearer token; an APIError becomes its envelope, anything else a logged JSON 500."""
    try:
        check_auth(request, api_key)
        return await handler(*args)
    except APIError as err:
        return error_response(err)
    except Exception:
        return internal_error(f"{request.method} {request.url.path}")


def check_auth(request: Request, api_key: str | None) -> None:
    """401 unless the request carries ``Authorization: Bearer <api_key>`` (nothing to check
    without a key)."""
    if not api_key:
        return
    header = request.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(given.encode(), api_key.encode()):
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def internal_error(what: str, exc: BaseException | None = None) -> JSONResponse:
    """The last-resort answer for an unexpected exception ``exc`` (default: the one being handled):
    a 500 envelope with a generic message and a reference; the traceback goes to the log only."""
    ref = uuid.uuid4().hex[:12]
    log.error("%s failed (error reference %s)", what, ref, exc_info=exc or True)
    return error_response(
        APIError(
            500,
            f"The server had an error while processing your request (error reference {ref}).",
            type="server_error",
        )
    )


async def read_json_object(request: Request) -> dict:
    """The request body as a JSON object (:func:`tunesmith.httpjson.read_json_object`, the reader
    the jobs service shares); anything else is a 400, a body over ``MAX_BODY_BYTES`` a 413. This
    is the only place serve parses a body."""
    try:
        return await httpjson.read_json_object(request)
    except httpjson.BodyError as exc:
        raise APIError(exc.status, exc.message, code=exc.code) from None


# -- models ---------------------------------------------------------------------------------------------
async def health(server, request: Request) -> dict:
    return {"status": "ok", "models": [m.id for m in server.models()], **server.scheduler.load}


async def list_models(server, request: Request) -> dict:
    return {"object": "list", "data": [_model_json(m, server.base_id) for m in server.models()]}


async def get_model(server, request: Request) -> dict:
    entry = server.get(request.path_params["model_id"])
    if entry is None:
        raise APIError(
            404,
            f"The model `{request.path_params['model_id']}` does not exist.",
            param="model",
            code="model_not_found",
        )
    return _model_json(entry, server.base_id)


def _model_json(entry, base_id: str | None = None) -> dict:
    """OpenAI's model object; adapters also name the base they run on (``parent``, as vLLM does)."""
    out = {"id": entry.id, "object": "model", "created": entry.created, "owned_by": entry.owned_by}
    if entry.adapter and base_id:
        out["parent"] = base_id
    return out


# -- generation -----------------------------------------------------------------------------------------
async def chat_completions(server, request: Request):
    """``POST /v1/chat/completions``: the conversation rendered with the model's chat template."""
    req, entry = await _parse(server, request, ChatCompletionRequest)
    try:
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages
        ]
    except ValueError as exc:
        raise APIError(400, str(exc), param="messages") from None
    try:
        ids = server.encode_chat(entry, messages)
    except ModelError as exc:
        raise APIError(400, str(exc), param="model") from None
    except ValueError as exc:  # the template rejected the conversation (models.template.render_chat)
        raise APIError(400, str(exc), param="messages") from None
    except Exception as exc:  # the tokenizer itself failed on the rendered text
        raise APIError(400, f"the messages could not be tokenized: {exc}", param="messages") from None
    limit = _budget(server, ids, req.max_completion_tokens or req.max_tokens, "messages")
    top = (req.top_logprobs or 0) if req.logprobs else None
    params = _sampling(req, top, len(entry.tokenizer))
    jobs, queue = _launch(server, entry, [ids], [limit], req, params)
    meta = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "created": int(time.time()),
        "model": entry.id,
        "prompt_tokens": len(ids),
        "n": req.n,
        "include_usage": req.include_usage(),
        "logprobs": req.logprobs,
        "tokenizer": entry.tokenizer,
    }
    return await _respond(
        request, req, jobs, queue, Collector("chat", meta), lambda q, n: chat_chunks(q, n, meta)
    )


async def completions(server, request: Request):
    """``POST /v1/completions``: one or more prompts (text or token ids), no template."""
    req, entry = await _parse(server, request, CompletionRequest)
    prompts, texts = [], []
    for p in req.prompts():
        if isinstance(p, list):
            if any(not 0 <= t < len(entry.tokenizer) for t in p):
                raise APIError(400, "prompt: token id outside the vocabulary", param="prompt")
            prompts.append(p)
            texts.append(entry.tokenizer.decode(p))
        else:
            prompts.append(server.encode_text(entry, p))
            texts.append(p)
    if not prompts or any(not p for p in prompts):
        raise APIError(400, "prompt: must not be empty", param="prompt")
    limits = [_budget(server, p, req.max_tokens, "prompt") for p in prompts]
    if any(limit == 0 for limit in limits):
        raise APIError(
            400,
            "max_tokens: 0 is only meaningful with echo, which this server does not score",
            param="max_tokens",
        )
    params = _sampling(req, req.logprobs, len(entry.tokenizer))
    jobs, queue = _launch(server, entry, prompts, limits, req, params)
    meta = {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "created": int(time.time()),
        "model": entry.id,
        "prompt_tokens": sum(len(p) for p in prompts),
        "n": req.n,
        "include_usage": req.include_usage(),
        "logprobs": req.logprobs is not None,
        "tokenizer": entry.tokenizer,
        "echo": texts if req.echo else None,
    }
    return await _respond(
        request, req, jobs, queue, Collector("text", meta), lambda q, n: completion_chunks(q, n, meta)
    )


async def _parse(server, request: Request, model_cls):
    """The validated request body and the served model it names (404 if none)."""
    body = await read_json_object(request)
    try:
        req = model_cls.model_validate(body)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    name = req.unsupported()
    if name:
        raise APIError(
            400, f"'{name}' is not supported by this server", param=name, code="unsupported_parameter"
        )
    entry = server.get(req.model)
    if entry is None:
        raise APIError(
            404,
            f"The model `{req.model}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    return req, entry


def _sampling(req, top_logprobs: int | None, vocab: int):
    from .sampling import SamplingParams

    bias = {}
    for key, value in (req.logit_bias or {}).items():
        if not 0 <= int(key) < vocab:
            raise APIError(
                400,
                f"logit_bias: token id {key} is outside the vocabulary (0..{vocab - 1})",
                param="logit_bias",
            )
        bias[int(key)] = float(value)
    return SamplingParams(
        temperature=req.temperature,
        top_p=req.top_p,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        logit_bias=bias,
        top_logprobs=top_logprobs,
    )


def _budget(server, prompt_ids: list[int], max_tokens: int | None, param: str) -> int:
    """The completion's token budget: ``max_tokens``, or what the context leaves; 400 when the
    prompt and ``max_tokens`` do not fit the model's context."""
    ctx, used = server.context_length, len(prompt_ids)
    if used >= ctx or (max_tokens is not None and used + max_tokens > ctx):
        asked = (
            f"{used + max_tokens} tokens ({used} in the {param}, {max_tokens} in the completion)"
            if max_tokens is not None
            else f"{used} tokens in the {param}"
        )
        raise APIError(
            400,
            f"This model's maximum context length is {ctx} tokens. However, you requested "
            f"{asked}. Please reduce the length of the {param} or completion.",
            param=param,
            code="context_length_exceeded",
        )
    return max_tokens if max_tokens is not None else ctx - used


def _launch(
    server, entry, prompts: list[list[int]], max_tokens: list[int], req, params
) -> tuple[list, asyncio.Queue]:
    """Queue one job per prompt, all or none: a request that could never be admitted is a 400
    naming the limit; one that fits but finds the queue full now is a 503 (retry)."""
    from .scheduler import GenRequest, NeverFits, Overloaded

    try:
        server.scheduler.check_fits([req.n] * len(prompts))
    except NeverFits as exc:
        raise APIError(400, str(exc), param=exc.param) from None
    loop, queue = asyncio.get_running_loop(), asyncio.Queue()
    jobs = []
    for k, (ids, limit) in enumerate(zip(prompts, max_tokens)):

        def sink(event, k=k):
            loop.call_soon_threadsafe(queue.put_nowait, (k, event))

        jobs.append(
            GenRequest(
                ids,
                limit,
                sink,
                entry.tokenizer,
                entry.stop_ids,
                adapter=entry.adapter_name,
                n=req.n,
                params=params,
                stop=req.stop_list(),
                seed=req.seed,
            )
        )
    try:
        server.scheduler.submit_all(jobs)
    except NeverFits as exc:
        raise APIError(400, str(exc), param=exc.param) from None
    except Overloaded as exc:
        raise APIError(
            503,
            f"The server is overloaded ({exc}); retry shortly.",
            type="server_error",
            code="overloaded",
        ) from None
    return jobs, queue


async def _respond(request: Request, req, jobs, queue, collector: Collector, chunks):
    """The answer to launched ``jobs``: an SSE stream of ``chunks`` for ``stream: true``, else the
    collected JSON (499 if the client went away while waiting). The jobs are cancelled when the
    answer ends either way."""
    if req.stream:

        async def stream():
            try:
                async for line in chunks(queue, len(jobs)):
                    yield line
            except Exception:  # headers are sent: the failure becomes the stream's last chunk
                yield _internal_stream_error()
            finally:
                for job in jobs:
                    job.cancel()

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        pending = len(jobs)
        while pending:
            try:
                k, event = await asyncio.wait_for(queue.get(), timeout=1.0)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    return JSONResponse({}, status_code=499)
                continue
            if event["type"] == "error":
                raise event_error(event)
            pending -= event["type"] == "done"
            collector.add(k, event)
    finally:
        for job in jobs:
            job.cancel()
    return JSONResponse(collector.result())


def _internal_stream_error() -> str:
    """The SSE error chunk that ends a stream whose generator failed (logged, generic message)."""
    from .respond import sse

    ref = uuid.uuid4().hex[:12]
    log.exception("streaming a response failed (error reference %s)", ref)
    return sse(
        {
            "error": {
                "message": f"The server had an error while streaming this response (error reference {ref}).",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
    )


# -- adapters ---------------------------------------------------------------------------------------------
async def add_adapter(server, request: Request, adapter_root: str | None) -> dict:
    """``{"id", "path"}``: load the adapter folder ``path`` (relative to ``adapter_root``) as ``id``."""
    body = await read_json_object(request)
    if not isinstance(body.get("id"), str) or not isinstance(body.get("path"), str):
        raise APIError(400, 'expected {"id": MODEL_ID, "path": FOLDER under the adapter root}', param="path")
    folder = _inside(adapter_root, body["path"])
    try:
        entry = await asyncio.to_thread(server.add_adapter, body["id"], str(folder), shown=body["path"])
    except ModelError as exc:
        raise APIError(400, _without_paths(str(exc), adapter_root, server.base_path), param="path") from None
    except (OSError, ValueError):  # e.g. a name the file system refuses
        raise APIError(
            400, "path: not a readable adapter folder under the adapter root", param="path"
        ) from None
    return _model_json(entry, server.base_id)


async def delete_adapter(server, request: Request) -> dict:
    model_id = request.path_params["model_id"]
    try:
        server.remove_adapter(model_id)
    except KeyError:
        raise APIError(
            404, f"no adapter `{model_id}` is being served", param="model", code="model_not_found"
        ) from None
    return {"id": model_id, "object": "model", "deleted": True}


def _inside(root: str | None, relative: str) -> Path:
    """``root/relative`` resolved, refusing anything that escapes ``root`` (no absolute paths, no ..)
    and names the file system cannot hold (control characters such as NUL, over-long names)."""
    if any(ord(c) < 32 or c == "\x7f" for c in relative):
        raise APIError(400, "path: must not contain control characters", param="path")
    if len(relative) > MAX_PATH_CHARS or any(
        len(part.encode("utf-8", "surrogatepass")) > 255 for part in relative.split("/")
    ):
        raise APIError(
            400, f"path: at most {MAX_PATH_CHARS} characters and 255 bytes per folder name", param="path"
        )
    try:
        base = Path(root or "").resolve()
        target = (base / relative).resolve()
    except (OSError, ValueError, RuntimeError):  # e.g. a symlink loop, unencodable characters
        raise APIError(400, "path: not a usable folder name", param="path") from None
    if Path(relative).is_absolute() or not target.is_relative_to(base) or target == base:
        raise APIError(400, "path must name a folder inside the server's adapter root", param="path")
    return target


def _without_paths(message: str, root: str | None, base_path: str) -> str:
    """``message`` with the server's own folders replaced: paths under the adapter root become
    relative to it (as the client names them), the root and the base model's folder a label."""
    for folder, label in ((root, "the adapter root"), (base_path, "the base model")):
        if not folder:
            continue
        for form in {str(Path(folder).resolve()), os.path.abspath(folder), str(folder)}:
            message = message.replace(form + os.sep, "" if label == "the adapter root" else f"<{label}>/")
            message = message.replace(form, f"<{label}>")
    return message
