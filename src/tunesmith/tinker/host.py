"""The models behind the Tinker-compatible API: base models, LoRA training models, samplers.

One :class:`TinkerHost` per server. It loads each operator-registered base model once (on first
use) and gives every training model (``create_model``) its own PEFT LoRA adapter on that one
copy — several clients' models share the base weights (PEFT multi-adapter), each with its own
Adam state and accumulated gradients. Samplers are adapters too: a snapshot of a training
model's weights (``save_weights_for_sampler``), a saved sampler checkpoint, or the bare base.

Concurrency: every operation that touches a model runs on the request queue's worker
(:class:`.futures.FutureQueue`, one thread by default), so the model is never used by two
threads at once; requests of one model run in order and models take turns. The methods that
routes call (``submit_*``) validate what can be validated cheaply, then queue the work and
return the request id. Ownership: every model, sampler and checkpoint belongs to the ``owner``
(the API key's project) that made it; another owner's id is answered exactly like a missing
one (:class:`NotFound`).

LoRA settings and adapter plumbing: :mod:`.adapters`. Weight format: ordinary PEFT adapters
(:mod:`.store`).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import DataError, TunesmithError
from . import adapters as ad
from . import store as st
from .futures import FutureQueue
from .training import adam_step, check_datums, forward_backward
from .wire import ForwardBackwardRequest

log = logging.getLogger(__name__)

SESSION_TIMEOUT = 300.0
"""Seconds without a heartbeat after which a session ends and its models are unloaded."""
MAX_LOADED_SAMPLERS = 4
"""Sampler adapters kept loaded at once (least recently used unloaded first; reloaded on use)."""
MAX_BATCH_ROWS = 64
"""Most sequences of several sampling requests decoded as one batch."""
MAX_SNAPSHOTS_PER_MODEL = 8
"""Unnamed sampler snapshots (``save_weights_and_get_sampling_client``) kept per training model;
sampling from an older one fails with a user error naming the fix."""


class NotFound(TunesmithError):
    """No such model / sampler / session for this owner (or not theirs): answer 404."""


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


@dataclass
class _Base:
    name: str
    hf: nn.Module  # the transformers model (PEFT injects its layers into it)
    tokenizer: object
    peft: nn.Module | None = None  # the PeftModel, once a first adapter exists
    loaded_samplers: OrderedDict = field(default_factory=OrderedDict)
    targets: dict = field(default_factory=dict)  # (attn, mlp, unembed) -> module names, of the bare model

    @property
    def vocab_size(self) -> int:
        return int(self.hf.get_input_embeddings().weight.shape[0])

    @property
    def max_context(self) -> int:
        return int(getattr(self.hf.config, "max_position_embeddings", 0) or 2048)

    @property
    def model(self) -> nn.Module:
        return self.peft if self.peft is not None else self.hf


@dataclass
class _Model:
    model_id: str
    owner: str
    base: str
    lora: dict  # rank, seed, train_mlp, train_attn, train_unembed
    user_metadata: dict
    optimizer: torch.optim.Optimizer | None = None
    params: dict = field(default_factory=dict)  # PEFT state-dict key -> parameter
    snapshots: list = field(default_factory=list)  # sampler ids of its unnamed snapshots, oldest first
    unloaded: bool = False
    session: str | None = None  # the session that made it: finishing it unloads the model


@dataclass
class _Sampler:
    sampler_id: str
    owner: str
    base: str
    model_path: str | None  # tinker:// path it was made from (None: base model or a snapshot)
    state: dict | None = None  # a snapshot's adapter tensors (PEFT keys)
    folder: Path | None = None  # a sampler checkpoint's PEFT folder
    lora_config: object = None  # the peft LoraConfig of ``state`` / ``folder``
    ready: bool = True  # False until a snapshot's weights are taken
    expired: bool = False
    session: str | None = None


@dataclass
class _PendingSample:
    """A queued sampling request: its prompt and spec builder, then its result or error."""

    prompt: list[int]
    make_spec: object
    spec: object = None
    result: object = None
    error: BaseException | None = None
    done: bool = False

    def finish(self, *, result=None, error: BaseException | None = None) -> None:
        self.result, self.error, self.done = result, error, True


@dataclass
class _Session:
    session_id: str
    owner: str
    last_heartbeat: float
    finished: bool = False


class SessionFinished(TunesmithError):
    """A heartbeat for a finished or timed-out session (the SDK stops heartbeating on 410)."""


class TinkerHost:
    """State and operations of the Tinker-compatible API (module docstring)."""

    def __init__(
        self,
        models: dict[str, Path | str],
        store: st.CheckpointStore,
        *,
        device: str = "auto",
        queue: FutureQueue | None = None,
        session_timeout: float = SESSION_TIMEOUT,
    ):
        from ..models.device import resolve_device

        self.model_paths = {name: str(path) for name, path in models.items()}
        self.store = store
        self.device = resolve_device(device)
        self.queue = queue or FutureQueue(workers=1)
        self._bases: dict[str, _Base] = {}
        self._models: dict[str, _Model] = {}
        self._samplers: dict[str, _Sampler] = {}
        self._sessions: dict[str, _Session] = {}
        self._pending: dict[str, list[_PendingSample]] = {}  # sampler id -> queued requests
        self.sample_batches: Counter[int] = Counter()  # requests per sampling batch -> how often
        self._lock = threading.Lock()  # guards the dicts above (routes read them)
        self.session_timeout = session_timeout
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name="tinker-sessions", daemon=True)
        self._reaper.start()

    def close(self) -> None:
        self._stop.set()
        self.queue.close()

    # ---- sessions: a client's lifetime -------------------------------------------------------
    def _reap_loop(self) -> None:
        while not self._stop.wait(min(30.0, max(0.05, self.session_timeout / 4))):
            self.reap()

    def reap(self, now: float | None = None) -> list[str]:
        """Finish every session without a heartbeat for ``session_timeout`` seconds (the SDK
        beats every 10 s); the ids finished."""
        now = time.time() if now is None else now
        with self._lock:
            stale = [
                s
                for s in self._sessions.values()
                if not s.finished and now - s.last_heartbeat > self.session_timeout
            ]
        for session in stale:
            log.info("tinker: session %s timed out; unloading its models", session.session_id)
            self.finish_session(session.owner, session.session_id)
        with self._lock:  # finished sessions are remembered a day (a late heartbeat gets 410)
            for sid in [
                s.session_id for s in self._sessions.values() if s.finished and now - s.last_heartbeat > 86400
            ]:
                del self._sessions[sid]
        return [s.session_id for s in stale]

    def finish_session(self, owner: str, session_id: str) -> None:
        """End a session (``/sessions/{id}/finish`` or a timeout): its models are unloaded and its
        samplers dropped — their checkpoints stay on disk, loadable by a later session."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.owner != owner:
                raise NotFound(f"no session {session_id!r}")
            session.finished = True
            models = [m for m in self._models.values() if m.session == session_id and not m.unloaded]
            samplers = [s for s in self._samplers.values() if s.session == session_id]
        for m in models:
            self.unload(owner, m.model_id)
        for s in samplers:
            self.queue.submit(owner, s.sampler_id, lambda sid=s.sampler_id: self._drop_sampler(sid))

    def _drop_sampler(self, sampler_id: str) -> dict:
        self._expire(sampler_id)
        with self._lock:
            self._samplers.pop(sampler_id, None)
        return {}

    # ---- service ----------------------------------------------------------------------------
    def capabilities(self) -> list[dict]:
        return [
            {"model_name": name, "trainable": True, "sampleable": True, "max_context_length": None}
            for name in self.model_paths
        ]

    def create_session(self, owner: str) -> str:
        sid = _new_id("session")
        with self._lock:
            self._sessions[sid] = _Session(sid, owner, time.time())
        return sid

    def _owned(self, table: dict, owner: str, key, what: str):
        """``table[key]`` when it exists and belongs to ``owner``; else NotFound — another
        project's id reads exactly as a missing one."""
        with self._lock:
            item = table.get(key) if isinstance(key, str) else None
        if item is None or item.owner != owner:
            raise NotFound(f"no {what} {key!r}")
        return item

    def _session(self, owner: str, session_id: str) -> _Session:
        return self._owned(self._sessions, owner, session_id, "session")

    def heartbeat(self, owner: str, session_id: str) -> None:
        session = self._session(owner, session_id)
        if session.finished:
            raise SessionFinished(f"session {session_id} has finished")
        session.last_heartbeat = time.time()

    def sessions(self, owner: str) -> list[_Session]:
        with self._lock:
            return [s for s in self._sessions.values() if s.owner == owner]

    def _check_session(self, owner: str, session_id: str) -> None:
        if self._session(owner, session_id).finished:
            raise DataError(f"session {session_id} has finished; create a new ServiceClient")

    def _check_base(self, name: str | None) -> str:
        if name not in self.model_paths:
            known = ", ".join(sorted(self.model_paths)) or "none"
            raise DataError(f"base_model {name!r} is not served here (served: {known})")
        return name

    # ---- lookups ------------------------------------------------------------------------------
    def model(self, owner: str, model_id: str) -> _Model:
        m = self._owned(self._models, owner, model_id, "model")
        if m.unloaded:
            raise NotFound(f"no model {model_id!r}")
        return m

    def sampler(self, owner: str, sampler_id: str) -> _Sampler:
        return self._owned(self._samplers, owner, sampler_id, "sampler")

    def info(self, owner: str, model_id: str) -> dict:
        """The SDK's ``GetInfoResponse`` (JSON)."""
        m = self.model(owner, model_id)
        arch = None
        with self._lock:
            base = self._bases.get(m.base)
        if base is not None:
            arch = (getattr(base.hf.config, "architectures", None) or [None])[0]
        return {
            "type": "get_info",
            "model_id": model_id,
            "model_data": {"arch": arch, "model_name": m.base, "tokenizer_id": m.base},
            "is_lora": True,
            "lora_rank": m.lora["rank"],
            "model_name": m.base,
        }

    # ---- base models (worker thread) -----------------------------------------------------------
    def _base(self, name: str) -> _Base:
        with self._lock:
            base = self._bases.get(name)
        if base is not None:
            return base
        from ..models.attention import register
        from ..models.gguf_import import resolve_model_path
        from ..models.load import load_causal_lm, load_tokenizer

        folder = resolve_model_path(self.model_paths[name])
        log.info("tinker: loading base model %s from %s", name, folder)
        hf = load_causal_lm(folder, device=self.device)
        hf.set_attn_implementation(register())  # packed datums attend per datum (varlen)
        for p in hf.parameters():
            p.requires_grad_(False)
        base = _Base(name, hf, load_tokenizer(folder))
        base.targets = ad.all_targets(hf)  # while the model is bare
        with self._lock:
            self._bases[name] = base
        return base

    def _add_adapter(self, base: _Base, adapter: str, cfg, seed: int | None) -> None:
        base.peft = ad.add_adapter(base.peft, base.hf, adapter, cfg, seed, self.device)

    def _lora_config(self, base: _Base, lora: dict):
        key = (bool(lora["train_attn"]), bool(lora["train_mlp"]), bool(lora["train_unembed"]))
        return ad.lora_config(base.targets[key], lora["rank"], base.name)

    def _delete_adapter(self, base: _Base, adapter: str) -> None:
        if base.peft is not None and adapter in base.peft.peft_config:
            base.peft.delete_adapter(adapter)

    @contextlib.contextmanager
    def _using(self, base: _Base, adapter: str | None, *, train: bool):
        """``base``'s model with only ``adapter`` active (None: adapters off); with ``train`` that
        adapter's parameters require grad and every other adapter's do not."""
        model = base.model
        if adapter is None:
            ctx = base.peft.disable_adapter() if base.peft is not None else contextlib.nullcontext()
            with ctx:
                yield model
            return
        base.peft.set_adapter(adapter)
        marker = f".{adapter}."
        for name, p in base.peft.named_parameters():
            if "lora_" in name:
                p.requires_grad_(train and marker in name)
        yield model

    # ---- training models -------------------------------------------------------------------------
    def _register_model(
        self, owner: str, session_id: str, model_seq_id, base: str, lora: dict, user_metadata
    ) -> _Model:
        """A new model entry with the id the SDK derives itself: ``<session>:train:<seq>``."""
        self._check_session(owner, session_id)
        if not isinstance(model_seq_id, int) or isinstance(model_seq_id, bool) or model_seq_id < 0:
            raise DataError(f"model_seq_id: a non-negative integer, got {model_seq_id!r}")
        model_id = f"{session_id}:train:{model_seq_id}"
        m = _Model(model_id, owner, base, dict(lora), dict(user_metadata or {}), session=session_id)
        with self._lock:
            if model_id in self._models:
                raise DataError(f"model {model_id} exists already (model_seq_id {model_seq_id} was used)")
            self._models[model_id] = m
        return m

    def submit_create_model(
        self, owner: str, session_id: str, model_seq_id: int, base_model: str, lora: dict, user_metadata
    ) -> tuple[str, str]:
        """(request id, model id) of a new LoRA training model on ``base_model``."""
        self._check_base(base_model)
        rank = lora.get("rank")
        if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= 1024:
            raise DataError(f"lora_config.rank: an integer in [1, 1024], got {rank!r}")
        if not any(lora.get(k) for k in ("train_attn", "train_mlp", "train_unembed")):
            raise DataError(
                "lora_config: train_attn, train_mlp and train_unembed are all false; nothing to train"
            )
        m = self._register_model(owner, session_id, model_seq_id, base_model, lora, user_metadata)
        model_id = m.model_id

        def run():
            base = self._base(base_model)
            self._add_adapter(base, model_id, self._lora_config(base, m.lora), m.lora.get("seed"))
            self._init_training(base, m)
            self._write_run(m)
            return {"model_id": model_id, "type": "create_model"}

        return self.queue.submit(owner, model_id, self._failing_create(m, run)), model_id

    def _failing_create(self, m: _Model, run):
        """``run`` that forgets the model when it fails (so its id then answers 404)."""

        def wrapped():
            try:
                return run()
            except BaseException:
                with self._lock:
                    self._models.pop(m.model_id, None)
                raise

        return wrapped

    def _init_training(self, base: _Base, m: _Model) -> None:
        m.params = ad.adapter_params(base.peft, m.model_id)
        for p in m.params.values():
            p.requires_grad_(True)
        m.optimizer = torch.optim.AdamW(
            list(m.params.values()), lr=1e-4, betas=(0.9, 0.95), eps=1e-12, weight_decay=0.0
        )

    def _write_run(self, m: _Model) -> None:
        self.store.write_run(
            m.owner,
            m.model_id,
            {
                "training_run_id": m.model_id,
                "base_model": m.base,
                "lora": m.lora,
                "user_metadata": m.user_metadata,
                "created": time.time(),
            },
        )

    def submit_forward_backward(self, owner: str, req: ForwardBackwardRequest) -> str:
        m = self.model(owner, req.model_id)

        def run():
            base = self._base(m.base)
            check_datums(req.data, vocab_size=base.vocab_size, max_context=base.max_context)
            with self._using(base, m.model_id, train=not req.forward_only) as model:
                model.train(not req.forward_only)
                outputs, metrics = forward_backward(
                    model, req.data, req.loss_fn, req.loss_fn_config, forward_only=req.forward_only
                )
            return ("forward_backward", outputs, metrics)

        return self.queue.submit(owner, m.model_id, run)

    def submit_optim_step(self, owner: str, model_id: str, adam: dict) -> str:
        m = self.model(owner, model_id)

        def run():
            metrics = adam_step(m.optimizer, m.params.values(), **adam)
            return {"metrics": metrics}

        return self.queue.submit(owner, m.model_id, run)

    def unload(self, owner: str, model_id: str) -> str:
        m = self.model(owner, model_id)
        m.unloaded = True  # new requests answer 404 now; queued ones still run

        def run():
            with self._lock:
                base = self._bases.get(m.base)
                self._models.pop(m.model_id, None)
            if base is not None:
                self._delete_adapter(base, m.model_id)
            for sampler_id in m.snapshots:  # unnamed snapshots live in memory only
                self._expire(sampler_id)
            m.optimizer, m.params, m.snapshots = None, {}, []
            return {"model_id": model_id, "type": "unload_model"}

        return self.queue.submit(owner, m.model_id, run)

    # ---- weights ----------------------------------------------------------------------------------
    def _save(
        self, m: _Model, tp: st.TinkerPath, *, optimizer: bool, overwrite: bool, ttl, user_metadata
    ) -> dict:
        from safetensors.torch import save_file

        base = self._base(m.base)
        stage = self.store.new_checkpoint(m.owner, tp, overwrite=overwrite)
        tensors = {k: p.detach().to("cpu", copy=True).contiguous() for k, p in m.params.items()}
        save_file(tensors, str(stage / "adapter_model.safetensors"), metadata={"format": "pt"})
        base.peft.peft_config[m.model_id].save_pretrained(str(stage))
        if optimizer:
            save_file(
                ad.optimizer_tensors(m.optimizer, m.params),
                str(stage / "optimizer.safetensors"),
                metadata={"format": "pt"},
            )
        return self.store.commit(stage, m.owner, tp, ttl_seconds=ttl, user_metadata=user_metadata)

    def submit_save(
        self,
        owner: str,
        model_id: str,
        name: str | None,
        *,
        sampler: bool,
        ttl,
        user_metadata,
        overwrite=False,
    ) -> str:
        """``save_weights`` (training checkpoint, with the Adam state) or, with ``sampler``,
        ``save_weights_for_sampler`` under ``name``; an unnamed sampler save makes an in-memory
        snapshot and answers its ``sampling_session_id``."""
        m = self.model(owner, model_id)
        if ttl is not None and (not isinstance(ttl, int) or ttl < 1):
            raise DataError(f"ttl_seconds: a positive number of seconds or null, got {ttl!r}")
        if name is None and sampler:
            sampler_id = _new_id("sampler")
            with self._lock:
                self._samplers[sampler_id] = _Sampler(
                    sampler_id, owner, m.base, None, ready=False, session=m.session
                )

            def snapshot():
                s = self._samplers[sampler_id]
                s.state = {k: p.detach().clone() for k, p in m.params.items()}
                s.lora_config = self._base(m.base).peft.peft_config[m.model_id]
                s.ready = True
                m.snapshots.append(sampler_id)
                while len(m.snapshots) > MAX_SNAPSHOTS_PER_MODEL:
                    self._expire(m.snapshots.pop(0))
                return {"sampling_session_id": sampler_id, "type": "save_weights_for_sampler"}

            return self.queue.submit(owner, m.model_id, snapshot)
        if name is None:
            name = f"ckpt-{int(time.time() * 1000)}"
        tp = st.TinkerPath(
            m.model_id, "sampler_weights" if sampler else "weights", st.check_name(name, "path")
        )

        def run():
            desc = self._save(
                m, tp, optimizer=not sampler, overwrite=overwrite, ttl=ttl, user_metadata=user_metadata
            )
            kind = "save_weights_for_sampler" if sampler else "save_weights"
            return {"path": desc["tinker_path"], "type": kind}

        return self.queue.submit(owner, m.model_id, run)

    def _expire(self, sampler_id: str) -> None:
        with self._lock:
            s = self._samplers.get(sampler_id)
        if s is None:
            return
        s.expired, s.state = True, None
        for base in list(self._bases.values()):
            if sampler_id in base.loaded_samplers:
                base.loaded_samplers.pop(sampler_id)
                self._delete_adapter(base, sampler_id)

    def submit_load(
        self,
        owner: str,
        path: str,
        *,
        optimizer: bool,
        model_id: str | None = None,
        session_id: str | None = None,
        model_seq_id: int | None = None,
        base_model: str | None = None,
        user_metadata=None,
    ) -> tuple[str, str]:
        """``load_weights``: into an existing model (``model_id``) or, with ``session_id``, into
        a new model made from the checkpoint's run settings. (request id, model id)."""
        tp, folder = self.store.resolve(owner, path)
        run_meta = self.store.read_run(owner, tp.run_id)
        if optimizer and not (folder / "optimizer.safetensors").is_file():
            raise DataError(
                f"{tp} has no optimizer state (sampler checkpoints never do); load it with optimizer=False"
            )
        if model_id is not None:
            m = self.model(owner, model_id)
            created = False
        else:
            if session_id is None:
                raise DataError(
                    "load_weights: give model_id, or session_id to create a model from the checkpoint"
                )
            base_name = self._check_base(base_model or run_meta["base_model"])
            m = self._register_model(
                owner, session_id, model_seq_id, base_name, run_meta["lora"], user_metadata
            )
            created = True

        def run():
            from safetensors.torch import load_file

            base = self._base(m.base)
            if created:
                self._add_adapter(base, m.model_id, self._lora_config(base, m.lora), 0)
                self._init_training(base, m)
                self._write_run(m)
            tensors = load_file(str(folder / "adapter_model.safetensors"))
            ad.copy_into(m.params, tensors, str(tp))
            if optimizer:
                ad.load_optimizer(
                    m.optimizer, m.params, load_file(str(folder / "optimizer.safetensors")), str(tp)
                )
            else:
                m.optimizer.state.clear()
            for p in m.params.values():
                p.grad = None
            return {"path": str(tp), "model_id": m.model_id, "type": "load_weights"}

        fn = self._failing_create(m, run) if created else run
        return self.queue.submit(owner, m.model_id, fn), m.model_id

    # ---- sampling ------------------------------------------------------------------------------------
    def create_sampler(
        self, owner: str, session_id: str, base_model: str | None, model_path: str | None
    ) -> str:
        self._check_session(owner, session_id)
        sampler_id = _new_id("sampler")
        if model_path:
            tp, folder = self.store.resolve(owner, model_path)
            run_meta = self.store.read_run(owner, tp.run_id)
            s = _Sampler(
                sampler_id,
                owner,
                self._check_base(base_model or run_meta["base_model"]),
                str(tp),
                session=session_id,
            )
            s.folder = folder
        else:
            s = _Sampler(sampler_id, owner, self._check_base(base_model), None, session=session_id)
        with self._lock:
            self._samplers[sampler_id] = s
        return sampler_id

    def sampler_info(self, owner: str, sampler_id: str) -> dict:
        s = self.sampler(owner, sampler_id)
        return {"sampler_id": sampler_id, "base_model": s.base, "model_path": s.model_path}

    def _activate_sampler(self, base: _Base, s: _Sampler) -> str | None:
        """Load ``s``'s adapter if needed (LRU); its adapter name, or None for the bare base."""
        if s.expired:
            raise DataError(
                f"sampler {s.sampler_id} was made from an older snapshot that is no longer kept "
                f"(the last {MAX_SNAPSHOTS_PER_MODEL} per model are); create a new sampling client"
            )
        if not s.ready:
            raise DataError(
                f"sampler {s.sampler_id}: its weights are not saved yet (wait for save_weights_for_sampler)"
            )
        if s.state is None and s.folder is None:
            return None
        if s.sampler_id in base.loaded_samplers:
            base.loaded_samplers.move_to_end(s.sampler_id)
            return s.sampler_id
        if s.folder is not None:  # a checkpoint: read its PEFT files (safetensors only)
            from safetensors.torch import load_file

            from ..models.quantize import import_peft

            import_peft()
            from peft import LoraConfig

            s.lora_config = LoraConfig.from_pretrained(str(s.folder))
            tensors = load_file(str(s.folder / "adapter_model.safetensors"))
        else:
            tensors = s.state
        while len(base.loaded_samplers) >= MAX_LOADED_SAMPLERS:
            old, _ = base.loaded_samplers.popitem(last=False)
            self._delete_adapter(base, old)
        self._add_adapter(base, s.sampler_id, s.lora_config, 0)
        ad.copy_into(ad.adapter_params(base.peft, s.sampler_id), tensors, s.model_path or s.sampler_id)
        base.loaded_samplers[s.sampler_id] = None
        return s.sampler_id

    def submit_sample(
        self, owner: str, sampler: _Sampler, prompt: list[int], make_spec, *, n_ids: int
    ) -> tuple[str, list[str]]:
        """(request id, the sequences' ids) of a sampling request on ``sampler``; ``make_spec(eos)``
        builds the :class:`.sampler.SampleSpec` given the model's EOS ids (the default stops).

        Requests of one sampler that are queued together and share a
        :func:`~.sampler.batch_key` decode as one batch (:func:`~.sampler.sample_batch`, at most
        :data:`MAX_BATCH_ROWS` rows): the first to run computes them all, the others then
        answer at once. An RL loop's one-sample-per-episode requests so cost about one."""
        seq_ids = [f"{sampler.sampler_id}:{secrets.token_hex(6)}:{i}" for i in range(n_ids)]
        entry = _PendingSample(prompt, make_spec)
        with self._lock:
            self._pending.setdefault(sampler.sampler_id, []).append(entry)

        def run():
            if not entry.done:
                self._sample_pending(sampler)
            if entry.error is not None:
                raise entry.error
            return ("sample", entry.result)

        return self.queue.submit(owner, sampler.sampler_id, run), seq_ids

    def _sample_pending(self, sampler: _Sampler) -> None:
        """Run the oldest pending request of ``sampler`` and every later one that can share its
        batch (worker thread); each entry ends done, with a result or an error of its own."""
        from .sampler import batch_key, check_request, sample, sample_batch

        with self._lock:
            queue = [e for e in self._pending.get(sampler.sampler_id, []) if not e.done]
        if not queue:
            return
        base = self._base(sampler.base)
        eos = self.stop_sequences(sampler.base)
        head = queue[0]
        group = []
        try:
            head.spec = head.make_spec(eos)
            key = batch_key(head.spec)
            rows = 0
            for e in queue if key is not None else [head]:
                try:
                    e.spec = e.spec or e.make_spec(eos)
                    if e is not head and batch_key(e.spec) != key:
                        continue
                    if rows + e.spec.num_samples > MAX_BATCH_ROWS and group:
                        break
                    check_request(
                        base.hf, e.prompt, e.spec, tokenizer=base.tokenizer, max_context=base.max_context
                    )
                except TunesmithError as exc:
                    e.finish(error=exc)
                    continue
                group.append(e)
                rows += e.spec.num_samples
            if group:
                adapter = self._activate_sampler(base, sampler)
                with self._using(base, adapter, train=False) as model:
                    if len(group) == 1:
                        results = [
                            sample(
                                model,
                                head.prompt,
                                head.spec,
                                tokenizer=base.tokenizer,
                                max_context=base.max_context,
                            )
                        ]
                    else:
                        results = sample_batch(
                            model,
                            [(e.prompt, e.spec) for e in group],
                            tokenizer=base.tokenizer,
                            max_context=base.max_context,
                        )
                for e, result in zip(group, results):
                    e.finish(result=result)
                self.sample_batches[len(group)] += 1
        except BaseException as exc:  # the head and its batch fail together, with this error
            for e in [head, *group]:
                if not e.done:
                    e.finish(error=exc)
        finally:
            with self._lock:
                pending = self._pending.get(sampler.sampler_id, [])
                pending[:] = [e for e in pending if not e.done]
                if not pending:
                    self._pending.pop(sampler.sampler_id, None)

    def stop_sequences(self, base_name: str) -> tuple[int, ...]:
        """The EOS ids a sampler stops at when the request gives no ``stop`` (worker thread)."""
        base = self._base(base_name)
        eos = getattr(getattr(base.hf, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = getattr(base.tokenizer, "eos_token_id", None)
        if eos is None:
            return ()
        return tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),)
