"""The OpenAI-compatible HTTP layer (FastAPI) over an :class:`InferenceServer`.

Endpoints: ``GET /health``, ``GET /v1/models``, ``GET /v1/models/{id}``,
``POST /v1/chat/completions``, ``POST /v1/completions`` (both streaming with server-sent events
and non-streaming), and, when an ``adapter_root`` is configured, ``POST /v1/adapters``
``{"id", "path"}`` / ``DELETE /v1/adapters/{id}`` to load/unload adapters found under that root.

Reuse from another app: ``build_router(server, api_key=...)`` returns an ``APIRouter`` that
answers errors itself (OpenAI envelope), so it can be included anywhere
(``app.include_router(build_router(server))``); ``create_app`` wraps it in a FastAPI app.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from ..errors import ModelError
from .protocol import APIError, ChatCompletionRequest, CompletionRequest, from_validation_error
from .respond import Collector, chat_chunks, completion_chunks


def _error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def build_router(server, *, api_key: str | None = None, adapter_root: str | None = None) -> APIRouter:
    """Routes for ``server`` (an InferenceServer); ``api_key`` guards everything but /health."""
    from .scheduler import GenRequest, Overloaded
    from .sampling import SamplingParams

    router = APIRouter()

    def check_auth(request: Request) -> None:
        if not api_key:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")

    async def parse(request: Request, model_cls):
        check_auth(request)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise APIError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        try:
            req = model_cls.model_validate(body)
        except ValidationError as exc:
            raise from_validation_error(exc) from None
        name = req.unsupported()
        if name:
            raise APIError(400, f"'{name}' is not supported by this server", param=name,
                           code="unsupported_parameter")
        entry = server.get(req.model)
        if entry is None:
            raise APIError(404, f"The model `{req.model}` does not exist or you do not have access to it.",
                           param="model", code="model_not_found")
        return req, entry

    def sampling(req, top_logprobs: int | None, vocab: int) -> SamplingParams:
        bias = {}
        for key, value in (req.logit_bias or {}).items():
            if not 0 <= int(key) < vocab:
                raise APIError(400, f"logit_bias: token id {key} is outside the vocabulary (0..{vocab - 1})",
                               param="logit_bias")
            bias[int(key)] = float(value)
        return SamplingParams(temperature=req.temperature, top_p=req.top_p, presence_penalty=req.presence_penalty,
                              frequency_penalty=req.frequency_penalty, logit_bias=bias, top_logprobs=top_logprobs)

    def budget(prompt_ids: list[int], max_tokens: int | None, param: str) -> int:
        ctx, used = server.context_length, len(prompt_ids)
        if used >= ctx or (max_tokens is not None and used + max_tokens > ctx):
            asked = f"{used + max_tokens} tokens ({used} in the {param}, {max_tokens} in the completion)" \
                if max_tokens is not None else f"{used} tokens in the {param}"
            raise APIError(400, f"This model's maximum context length is {ctx} tokens. However, you requested "
                                f"{asked}. Please reduce the length of the {param} or completion.",
                           param=param, code="context_length_exceeded")
        return max_tokens if max_tokens is not None else ctx - used

    def launch(entry, prompts: list[list[int]], max_tokens: list[int], req, params) -> tuple[list, asyncio.Queue]:
        if req.n > server.scheduler.max_batch:
            raise APIError(400, f"n: at most {server.scheduler.max_batch} choices per request on this server",
                           param="n")
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        jobs = []
        for k, (ids, limit) in enumerate(zip(prompts, max_tokens)):
            def sink(event, k=k):
                loop.call_soon_threadsafe(queue.put_nowait, (k, event))
            jobs.append(GenRequest(ids, limit, sink, entry.tokenizer, entry.stop_ids, adapter=entry.adapter_name,
                                   n=req.n, params=params, stop=req.stop_list(), seed=req.seed))
        try:
            for job in jobs:
                server.scheduler.submit(job)
        except Overloaded as exc:
            for job in jobs:
                job.cancel()
            raise APIError(503, f"The server is overloaded ({exc}); retry shortly.", type="server_error",
                           code="overloaded") from None
        return jobs, queue

    async def respond(request: Request, req, entry, jobs, queue, collector: Collector, chunks):
        if req.stream:
            async def stream():
                try:
                    async for line in chunks(queue, len(jobs)):
                        yield line
                finally:
                    for job in jobs:
                        job.cancel()
            return StreamingResponse(stream(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
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
                    raise APIError(500, event["message"], type="server_error")
                pending -= event["type"] == "done"
                collector.add(k, event)
        finally:
            for job in jobs:
                job.cancel()
        return JSONResponse(collector.result())

    def guarded(handler):
        async def endpoint(request: Request):
            try:
                return await handler(request)
            except APIError as err:
                return _error_response(err)
        endpoint.__name__ = handler.__name__
        return endpoint

    @router.get("/health")
    async def health():
        return {"status": "ok", "models": [m.id for m in server.models()], **server.scheduler.load}

    async def list_models(request: Request):
        check_auth(request)
        return {"object": "list", "data": [_model_json(m, server.base_id) for m in server.models()]}

    async def get_model(request: Request):
        check_auth(request)
        entry = server.get(request.path_params["model_id"])
        if entry is None:
            raise APIError(404, f"The model `{request.path_params['model_id']}` does not exist.",
                           param="model", code="model_not_found")
        return _model_json(entry, server.base_id)

    async def chat_completions(request: Request):
        req, entry = await parse(request, ChatCompletionRequest)
        try:
            messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                        for m in req.messages]
        except ValueError as exc:
            raise APIError(400, str(exc), param="messages") from None
        try:
            ids = server.encode_chat(entry, messages)
        except ModelError as exc:
            raise APIError(400, str(exc), param="model") from None
        except Exception as exc:  # the template itself rejected the conversation (e.g. role order)
            raise APIError(400, f"the chat template rejected the messages: {exc}", param="messages") from None
        limit = budget(ids, req.max_completion_tokens or req.max_tokens, "messages")
        top = (req.top_logprobs or 0) if req.logprobs else None
        params = sampling(req, top, len(entry.tokenizer))
        jobs, queue = launch(entry, [ids], [limit], req, params)
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": entry.id,
                "prompt_tokens": len(ids), "n": req.n, "include_usage": req.include_usage(),
                "logprobs": req.logprobs, "tokenizer": entry.tokenizer}
        return await respond(request, req, entry, jobs, queue, Collector("chat", meta),
                             lambda q, n: chat_chunks(q, n, meta))

    async def completions(request: Request):
        req, entry = await parse(request, CompletionRequest)
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
        limits = [budget(p, req.max_tokens, "prompt") for p in prompts]
        if any(limit == 0 for limit in limits):
            raise APIError(400, "max_tokens: 0 is only meaningful with echo, which this server does not score",
                           param="max_tokens")
        params = sampling(req, req.logprobs, len(entry.tokenizer))
        jobs, queue = launch(entry, prompts, limits, req, params)
        meta = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": entry.id,
                "prompt_tokens": sum(len(p) for p in prompts), "n": req.n, "include_usage": req.include_usage(),
                "logprobs": req.logprobs is not None, "tokenizer": entry.tokenizer,
                "echo": texts if req.echo else None}
        return await respond(request, req, entry, jobs, queue, Collector("text", meta),
                             lambda q, n: completion_chunks(q, n, meta))

    async def add_adapter(request: Request):
        check_auth(request)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise APIError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not isinstance(body.get("path"), str):
            raise APIError(400, 'expected {"id": MODEL_ID, "path": FOLDER under the adapter root}', param="path")
        folder = _inside(adapter_root, body["path"])
        try:
            entry = await asyncio.to_thread(server.add_adapter, body["id"], str(folder))
        except ModelError as exc:
            raise APIError(400, str(exc), param="path") from None
        return _model_json(entry, server.base_id)

    async def delete_adapter(request: Request):
        check_auth(request)
        model_id = request.path_params["model_id"]
        try:
            server.remove_adapter(model_id)
        except KeyError:
            raise APIError(404, f"no adapter `{model_id}` is being served", param="model",
                           code="model_not_found") from None
        return {"id": model_id, "object": "model", "deleted": True}

    router.add_api_route("/v1/models", guarded(list_models), methods=["GET"])
    router.add_api_route("/v1/models/{model_id:path}", guarded(get_model), methods=["GET"])
    router.add_api_route("/v1/chat/completions", guarded(chat_completions), methods=["POST"])
    router.add_api_route("/v1/completions", guarded(completions), methods=["POST"])
    if adapter_root:
        router.add_api_route("/v1/adapters", guarded(add_adapter), methods=["POST"])
        router.add_api_route("/v1/adapters/{model_id:path}", guarded(delete_adapter), methods=["DELETE"])
    return router


def _inside(root: str | None, relative: str) -> Path:
    """``root/relative`` resolved, refusing anything that escapes ``root`` (no absolute paths, no ..)."""
    base = Path(root or "").resolve()
    target = (base / relative).resolve()
    if Path(relative).is_absolute() or not target.is_relative_to(base) or target == base:
        raise APIError(400, "path must name a folder inside the server's adapter root", param="path")
    return target


def _model_json(entry, base_id: str | None = None) -> dict:
    """OpenAI's model object; adapters also name the base they run on (``parent``, as vLLM does)."""
    out = {"id": entry.id, "object": "model", "created": entry.created, "owned_by": entry.owned_by}
    if entry.adapter and base_id:
        out["parent"] = base_id
    return out


def create_app(server, *, api_key: str | None = None, adapter_root: str | None = None,
               close_on_shutdown: bool = False) -> FastAPI:
    """A FastAPI app serving ``server``. With ``close_on_shutdown`` the scheduler stops with the app."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        server.scheduler.start()
        yield
        if close_on_shutdown:
            server.close()

    app = FastAPI(title="tunesmith", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(build_router(server, api_key=api_key, adapter_root=adapter_root))

    @app.exception_handler(404)
    async def not_found(request, exc):
        return _error_response(APIError(404, f"Unknown route {request.method} {request.url.path}",
                                        code="unknown_url"))

    @app.exception_handler(405)
    async def bad_method(request, exc):
        return _error_response(APIError(405, f"Method {request.method} not allowed on {request.url.path}",
                                        code="method_not_allowed"))
    return app
