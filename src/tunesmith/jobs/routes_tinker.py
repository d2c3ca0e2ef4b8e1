"""The ``/api/v1`` routes of the Tinker-compatible API (what the ``tinker`` 0.38 SDK calls).

Part of the jobs server's app (:func:`tunesmith.jobs.app.create_app`), live when the operator
registers Tinker base models (``--tinker-model``, ``--base-model``): one process, one store of
API keys and projects. The SDK sends its key as ``X-API-Key: tml-<key>`` (it refuses keys
without that prefix), so a tunesmith key ``K`` is used as ``TINKER_API_KEY=tml-K``;
``Authorization: Bearer K`` works too. The key's project owns everything the calls create;
another project's ids answer 404 exactly like missing ones.

Request bodies are the SDK's own pydantic request types (parsed with those classes, so the
schema is never restated here) except ``forward_backward``, whose protobuf / JSON body
:mod:`tunesmith.tinker.wire` decodes. Work is queued
(:class:`~tunesmith.tinker.host.TinkerHost`) and answered with ``{"request_id"}``; ``retrieve_future`` long-polls up to :data:`LONG_POLL_SECONDS` and then
answers try-again, the result (protobuf for ``forward_backward`` and ``sample`` results, as
the SDK asks, JSON otherwise) or ``{"error", "category"}``.

Errors are the jobs server's JSON envelope (``{"error": {"message", …}}``) with
``x-should-retry: false`` on 4xx, so the SDK raises at once instead of retrying: 400 for a
malformed body (naming the field), 401 for a bad key, 404 for an unknown or foreign id.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..errors import TunesmithError
from ..serve.protocol import APIError
from ..tinker import store as st
from ..tinker.futures import FutureNotFound
from ..tinker.host import NotFound, SessionFinished, TinkerHost
from .bodies import read_json

router = APIRouter(prefix="/api/v1")
LONG_POLL_SECONDS = 20.0
DEFAULT_MAX_TOKENS = 256
"""``max_tokens`` of a sampling request that gives none (Tinker's SamplingParams default it to None)."""
PROTO = "application/x-protobuf"

CLIENT_CONFIG = {
    "pjwt_auth_enabled": False,  # API keys only
    "credential_default_source": "api_key",
    "proto_compress_fwdbwd": True,  # the wire codec decompresses zstd (capped)
    "use_pyqwest_transport": False,  # httpx: what the SDK always has
    "parallel_fwdbwd_chunks": False,  # chunks in order: gradients sum in a reproducible order
    "sample_use_retrieve_futures": False,
    "custom_loss_server_side": False,  # forward_backward_custom runs the loss client-side
    "sample_join_sampling_session": False,
}


# ---- plumbing --------------------------------------------------------------------------------
def _host(request: Request) -> TinkerHost:
    host = request.app.state.service.tinker
    if host is None:
        raise APIError(404, "the Tinker API is not enabled on this server (start it with --tinker-model)")
    return host


def _owner(request: Request) -> str:
    """The caller's project id, from ``X-API-Key`` (``tml-`` prefix optional) or a bearer key."""
    key = request.headers.get("x-api-key", "").strip()
    if not key:
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        key = bearer.strip() if scheme.lower() == "bearer" else ""
    if key.startswith("tml-"):
        key = key[len("tml-") :]
    if not key:
        raise APIError(401, "No API key: send X-API-Key: tml-<your tunesmith key>", code="invalid_api_key")
    found = request.app.state.service.store.project_for_key(key)
    if found is None:
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")
    return found["id"]


def _error(exc: Exception) -> APIError:
    """A tunesmith error raised while taking a request -> its HTTP error."""
    if isinstance(exc, (NotFound, st.CheckpointNotFound, FutureNotFound)):
        return APIError(404, str(exc), code="not_found")
    if isinstance(exc, SessionFinished):
        return APIError(410, str(exc), code="session_finished")  # the SDK stops heartbeating
    return APIError(400, str(exc), code="invalid_request")


async def _body(request: Request, type_name: str):
    """The JSON body parsed as the SDK's ``tinker.types.<type_name>``; 400 naming the field."""
    import pydantic
    from tinker import types

    data = await read_json(request)
    try:
        return getattr(types, type_name).model_validate(data)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err.get("loc", ())) or None
        raise APIError(400, f"Invalid request: {where}: {err.get('msg')}", param=where) from None


def _future(request_id: str, **extra) -> dict:
    return {"request_id": request_id, **extra}


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except TunesmithError as exc:
        raise _error(exc) from None


# ---- service ---------------------------------------------------------------------------------
@router.api_route("/healthz", methods=["GET", "POST"])
async def healthz():
    return {"status": "ok"}


@router.post("/client/config")
async def client_config(request: Request):
    _owner(request)
    return CLIENT_CONFIG


@router.post("/client/dynamic_config")
async def client_dynamic_config(request: Request):
    _owner(request)
    return {}


@router.post("/telemetry")
async def telemetry(request: Request):
    _owner(request)  # the SDK's usage events: accepted and dropped (nothing leaves this server)
    return {"status": "accepted"}


@router.get("/get_server_capabilities")
async def capabilities(request: Request):
    _owner(request)
    return {"supported_models": _host(request).capabilities()}


@router.post("/create_session")
async def create_session(request: Request):
    owner = _owner(request)
    await _body(request, "CreateSessionRequest")  # validated; tags and metadata are not kept
    sid = _host(request).create_session(owner)
    return {"type": "create_session", "session_id": sid}


@router.post("/session_heartbeat")
async def session_heartbeat(request: Request):
    owner = _owner(request)
    body = await _body(request, "SessionHeartbeatRequest")
    _call(_host(request).heartbeat, owner, body.session_id)
    return {"type": "session_heartbeat"}


@router.post("/sessions/{session_id}/finish")
async def finish_session(session_id: str, request: Request):
    owner = _owner(request)
    _call(_host(request).finish_session, owner, session_id)
    return Response(status_code=200, content=b"null", media_type="application/json")


@router.get("/sessions")
async def list_sessions(request: Request):
    owner = _owner(request)
    return {"sessions": [s.session_id for s in _host(request).sessions(owner)]}


# ---- models ------------------------------------------------------------------------------------
@router.post("/create_model")
async def create_model(request: Request):
    owner = _owner(request)
    body = await _body(request, "CreateModelRequest")
    if body.lora_config is None:
        raise APIError(
            400, "lora_config: tunesmith trains LoRA models; give lora_config", param="lora_config"
        )
    rid, model_id = _call(
        _host(request).submit_create_model,
        owner,
        body.session_id,
        body.model_seq_id,
        body.base_model,
        body.lora_config.model_dump(),
        body.user_metadata,
    )
    return _future(rid, model_id=model_id)


@router.post("/get_info")
async def get_info(request: Request):
    owner = _owner(request)
    body = await _body(request, "GetInfoRequest")
    return _call(_host(request).info, owner, body.model_id)


@router.post("/unload_model")
async def unload_model(request: Request):
    owner = _owner(request)
    body = await _body(request, "UnloadModelRequest")
    return _future(_call(_host(request).unload, owner, body.model_id), model_id=body.model_id)


# ---- training ----------------------------------------------------------------------------------
@router.post("/forward_backward")
async def forward_backward(request: Request):
    from ..tinker.wire import WireError, decode_forward_backward

    owner = _owner(request)
    raw = await request.body()
    try:
        req = decode_forward_backward(
            raw, request.headers.get("content-type"), request.headers.get("content-encoding")
        )
    except WireError as exc:
        raise APIError(400, str(exc), param=exc.field) from None
    return _future(_call(_host(request).submit_forward_backward, owner, req), model_id=req.model_id)


@router.post("/optim_step")
async def optim_step(request: Request):
    owner = _owner(request)
    body = await _body(request, "OptimStepRequest")
    params = body.optim_params
    from tinker.types import AdamParams

    if not isinstance(params, AdamParams):
        raise APIError(400, "optim_params: only Adam is supported", param="optim_params")
    adam = params.model_dump(exclude={"type"})
    return _future(
        _call(_host(request).submit_optim_step, owner, body.model_id, adam), model_id=body.model_id
    )


# ---- weights -------------------------------------------------------------------------------------
async def _save(request: Request, type_name: str, *, sampler: bool) -> dict:
    owner = _owner(request)
    body = await _body(request, type_name)
    rid = _call(
        _host(request).submit_save,
        owner,
        body.model_id,
        body.path,
        sampler=sampler,
        ttl=body.ttl_seconds,
        user_metadata=body.user_metadata,
        overwrite=getattr(body, "overwrite", False),
    )
    return _future(rid, model_id=body.model_id)


@router.post("/save_weights")
async def save_weights(request: Request):
    return await _save(request, "SaveWeightsRequest", sampler=False)


@router.post("/save_weights_for_sampler")
async def save_weights_for_sampler(request: Request):
    return await _save(request, "SaveWeightsForSamplerRequest", sampler=True)


@router.post("/load_weights")
async def load_weights(request: Request):
    owner = _owner(request)
    body = await _body(request, "LoadWeightsRequest")
    rid, model_id = _call(
        _host(request).submit_load,
        owner,
        body.path,
        optimizer=body.optimizer,
        model_id=body.model_id,
        session_id=body.session_id,
        model_seq_id=body.model_seq_id,
        base_model=body.base_model,
        user_metadata=body.user_metadata,
    )
    return _future(rid, model_id=model_id)


# ---- sampling --------------------------------------------------------------------------------------
@router.post("/create_sampling_session")
async def create_sampling_session(request: Request):
    owner = _owner(request)
    body = await _body(request, "CreateSamplingSessionRequest")
    if not body.base_model and not body.model_path:
        raise APIError(400, "give base_model or model_path", param="base_model")
    sid = _call(_host(request).create_sampler, owner, body.session_id, body.base_model, body.model_path)
    return {"type": "create_sampling_session", "sampling_session_id": sid}


@router.get("/samplers/{sampler_id}")
async def get_sampler(sampler_id: str, request: Request):
    owner = _owner(request)
    return _call(_host(request).sampler_info, owner, sampler_id)


def _sample_spec(body, eos: tuple[int, ...]):
    """The request's sampling settings as a :class:`~tunesmith.tinker.sampler.SampleSpec`
    (``stop``: :func:`~tunesmith.tinker.sampler.resolve_stop`)."""
    from ..tinker.sampler import SampleSpec, resolve_stop

    p = body.sampling_params
    stop_ids, stop_strings = resolve_stop(p.stop, eos)
    return SampleSpec(
        num_samples=body.num_samples,
        max_tokens=p.max_tokens if p.max_tokens is not None else DEFAULT_MAX_TOKENS,
        temperature=float(p.temperature),
        top_k=int(p.top_k),
        top_p=float(p.top_p),
        seed=p.seed,
        stop_token_ids=stop_ids,
        stop_strings=stop_strings,
        prompt_logprobs=bool(body.prompt_logprobs),
        topk_prompt_logprobs=int(body.topk_prompt_logprobs or 0),
        topk_sample_logprobs=int(body.topk_sample_logprobs or 0),
        prompt_logprobs_last_n=body.prompt_logprobs_last_n,
    )


@router.post("/asample")
async def asample(request: Request):
    owner = _owner(request)
    body = await _body(request, "SampleRequest")
    host = _host(request)
    unsupported = [
        name
        for name, given in (
            ("target_prompt_logprobs", body.target_prompt_logprobs is not None),
            ("prompt_alt_tokens_k", bool(body.prompt_alt_tokens_k)),
        )
        if given
    ]
    if unsupported:
        raise APIError(400, f"{unsupported[0]} is not supported by this server", param=unsupported[0])
    if body.sampling_session_id:
        sampler = _call(host.sampler, owner, body.sampling_session_id)
    else:  # the legacy form: a base model or a checkpoint path in the request itself
        sid = _call(host.create_sampler, owner, _any_session(host, owner), body.base_model, body.model_path)
        sampler = _call(host.sampler, owner, sid)
    prompt: list[int] = []
    for i, chunk in enumerate(body.prompt.chunks):
        tokens = getattr(chunk, "tokens", None)
        if tokens is None:
            raise APIError(
                400, f"prompt.chunks[{i}]: only text (encoded_text) chunks are supported", param="prompt"
            )
        prompt.extend(int(t) for t in tokens)

    def make_spec(eos):
        return _sample_spec(body, eos)

    rid, seq_ids = _call(host.submit_sample, owner, sampler, prompt, make_spec, n_ids=body.num_samples)
    return _future(rid, sample_sequence_ids=seq_ids)


def _any_session(host: TinkerHost, owner: str) -> str:
    sessions = host.sessions(owner)
    if not sessions:
        return host.create_session(owner)
    return sessions[0].session_id


# ---- futures ---------------------------------------------------------------------------------------
def _result_response(value: Any) -> Response:
    from ..tinker import wire

    if isinstance(value, tuple) and value[0] == "forward_backward":
        _, outputs, metrics = value
        return Response(wire.encode_forward_backward_output(outputs, metrics), media_type=PROTO)
    if isinstance(value, tuple) and value[0] == "sample":
        return Response(wire.encode_sample_response(value[1]), media_type=PROTO)
    return JSONResponse(value)


@router.post("/retrieve_future")
async def retrieve_future(request: Request):
    owner = _owner(request)
    body = await _body(request, "FutureRetrieveRequest")
    host = _host(request)
    deadline = time.monotonic() + LONG_POLL_SECONDS
    delay = 0.005
    while True:
        try:
            poll = host.queue.poll(owner, body.request_id)
        except FutureNotFound as exc:
            raise _error(exc) from None
        if poll.state != "pending" or time.monotonic() >= deadline:
            break
        await asyncio.sleep(delay)  # cheap: no thread is held while a request runs
        delay = min(delay * 2, 0.1)
    if poll.state == "done":
        return _result_response(poll.body)
    return JSONResponse(poll.body)


# ---- REST: runs and checkpoints ----------------------------------------------------------------------
def _run_object(host: TinkerHost, owner: str, run_id: str) -> dict:
    meta = host.store.read_run(owner, run_id)
    ckpts = host.store.list_checkpoints(owner, run_id)
    last = dict.fromkeys(("training", "sampler"))
    for c in ckpts:
        last[c["checkpoint_type"]] = c
    run_dir = host.store.run_dir(owner, run_id)
    return {
        "training_run_id": run_id,
        "base_model": meta["base_model"],
        "model_owner": owner,
        "is_lora": True,
        "corrupted": False,
        "lora_rank": meta["lora"]["rank"],
        "last_request_time": st.iso(max(meta.get("created", 0), (run_dir / "run.json").stat().st_mtime)),
        "last_checkpoint": last["training"],
        "last_sampler_checkpoint": last["sampler"],
        "user_metadata": {str(k): str(v) for k, v in (meta.get("user_metadata") or {}).items()} or None,
    }


@router.get("/training_runs")
async def list_training_runs(request: Request, limit: int = 20, offset: int = 0):
    owner = _owner(request)
    host = _host(request)
    ids = host.store.list_runs(owner)
    page = ids[max(0, offset) : max(0, offset) + max(1, min(limit, 1000))]
    return {
        "training_runs": [_run_object(host, owner, r) for r in page],
        "cursor": {"offset": offset, "limit": limit, "total_count": len(ids)},
    }


@router.get("/training_runs/{run_id}")
async def get_training_run(run_id: str, request: Request):
    owner = _owner(request)
    return _call(_run_object, _host(request), owner, run_id)


@router.get("/training_runs/{run_id}/checkpoints")
async def list_checkpoints(run_id: str, request: Request):
    owner = _owner(request)
    return {"checkpoints": _call(_host(request).store.list_checkpoints, owner, run_id)}


@router.delete("/training_runs/{run_id}/checkpoints/{checkpoint_id:path}")
async def delete_checkpoint(run_id: str, checkpoint_id: str, request: Request):
    owner = _owner(request)
    _call(_host(request).store.delete, owner, run_id, checkpoint_id)
    return Response(status_code=200, content=b"null", media_type="application/json")


@router.put("/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/ttl")
async def set_ttl(run_id: str, checkpoint_id: str, request: Request):
    owner = _owner(request)
    data = await read_json(request)
    ttl = data.get("ttl_seconds")
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 1):
        raise APIError(400, "ttl_seconds: a positive integer or null", param="ttl_seconds")
    _call(_host(request).store.set_ttl, owner, run_id, checkpoint_id, ttl)
    return Response(status_code=200, content=b"null", media_type="application/json")


@router.get("/checkpoints")
async def list_user_checkpoints(request: Request, limit: int = 100, offset: int = 0):
    owner = _owner(request)
    host = _host(request)
    everything = [c for run in host.store.list_runs(owner) for c in host.store.list_checkpoints(owner, run)]
    everything.sort(key=lambda c: c["time"], reverse=True)
    page = everything[max(0, offset) : max(0, offset) + max(1, min(limit, 1000))]
    return {"checkpoints": page, "cursor": {"offset": offset, "limit": limit, "total_count": len(everything)}}


@router.post("/weights_info")
async def weights_info(request: Request):
    owner = _owner(request)
    data = await read_json(request)
    host = _host(request)
    tp, _ = _call(host.store.resolve, owner, data.get("tinker_path"))
    meta = _call(host.store.read_run, owner, tp.run_id)
    lora = meta["lora"]
    return {
        "base_model": meta["base_model"],
        "is_lora": True,
        "lora_rank": lora["rank"],
        "train_unembed": lora.get("train_unembed"),
        "train_mlp": lora.get("train_mlp"),
        "train_attn": lora.get("train_attn"),
    }


@router.get("/training_runs/{run_id}/checkpoints/{segment}/{name}/archive")
async def checkpoint_archive(run_id: str, segment: str, name: str, request: Request):
    """The checkpoint folder as a ``.tar.gz`` (a PEFT adapter + tunesmith's metadata)."""
    import io
    import tarfile

    owner = _owner(request)
    folder = _call(_host(request).store.find, owner, run_id, f"{segment}/{name}")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for f in sorted(folder.iterdir()):
            if f.is_file():
                tar.add(f, arcname=f"{name}/{f.name}")
    return Response(
        buf.getvalue(),
        media_type="application/gzip",
        headers={"content-disposition": f'attachment; filename="{run_id}-{segment}-{name}.tar.gz"'},
    )
