"""``/v1/chat/completions`` and ``/v1/completions`` for base, ``ft:`` and checkpoint models,
answered by :mod:`tunesmith.serve` (continuous batching, streaming, logprobs, usage, OpenAI errors).

One :class:`~tunesmith.serve.server.InferenceServer` per allow-listed base model, started on its
first request. A fine-tuned model is that base's server with the job's LoRA adapter (``final/``)
added on demand under the model's ``ft:`` id, so every fine-tune of a base shares one copy of its
weights and one batch. A checkpoint model (``…:ckpt-step-N``) is served the same way: its
trainable tensors are written once as a PEFT adapter folder
(:func:`tunesmith.export.adapter.checkpoint_adapter`) next to the run and added like any other
adapter. At most ``max_adapters`` adapters stay loaded per base; the least recently used one is
removed first (its running requests finish).

The caller (:mod:`.routes_inference`) authenticates and checks that the model belongs to the
caller's project *before* anything here runs, then answers with serve's handlers
(:mod:`tunesmith.serve.handlers`), called without a key of their own.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from pathlib import Path

from .. import rundir
from ..errors import ModelError
from ..export.adapter import AdapterMismatch, UnsupportedAdapter, checkpoint_adapter
from ..serve.protocol import APIError
from .errors import model_not_found
from .objects import base_name
from .settings import tinker_models

MAX_ADAPTERS = 16


class _Base:
    """One base model's InferenceServer and its LRU of loaded adapter ids."""

    def __init__(self, name: str, path: Path, device: str, max_batch: int):
        from ..serve import InferenceServer

        self.server = InferenceServer(str(path), model_id=name, device=device, max_batch=max_batch)
        self.loaded: OrderedDict[str, None] = OrderedDict()


class Inference:
    """Resolves a request's model to a served model id on a base model's InferenceServer."""

    def __init__(
        self, settings, store, *, device: str = "auto", max_batch: int = 16, max_adapters: int = MAX_ADAPTERS
    ):
        self.settings, self.store = settings, store
        self.device, self.max_batch, self.max_adapters = device, max_batch, max_adapters
        self._bases: dict[str, _Base] = {}
        self._lock = threading.Lock()  # guards _bases and every base's ``loaded``

    # ---- model location -------------------------------------------------------------------------
    def locate(self, job: dict, step: int | None) -> Path:
        """The adapter folder of a job's model (``final/``) or of one of its checkpoints
        (exported on first use). Blocking."""
        base = base_name(job)
        if base not in self.settings.base_models:
            raise model_not_found(job["model"])
        folder = model_folder(self.settings, job, step)
        if step is None:
            if not ((folder / "adapter_config.json").is_file() or (folder / "config.json").is_file()):
                raise model_not_found(job["fine_tuned_model"] or job["id"])
            return folder
        if (folder / "adapter_config.json").is_file():
            return folder  # exported earlier; the checkpoint itself may have been rotated away since
        from ..engine.checkpoint import verify_checkpoint  # torch: not at the app's import

        ckpt = rundir.RunDir(self.settings.run_dir(job["id"])).checkpoint(step)
        # Verified, not only committed: a damaged checkpoint can load without error (a flipped
        # byte) and would serve wrong weights; to the client it is as gone as a rotated one.
        if not (ckpt / rundir.MARKER).is_file() or verify_checkpoint(ckpt) is not None:
            raise model_not_found(f"checkpoint step {step}")
        try:
            checkpoint_adapter(str(self.settings.base_models[base]), ckpt, folder)
        except UnsupportedAdapter:
            raise model_not_found(f"checkpoint {ckpt.name} (only LoRA checkpoints are served)") from None
        except AdapterMismatch:
            raise APIError(
                500, f"checkpoint {ckpt.name} does not match its run's adapter", type="server_error"
            ) from None
        return folder

    def _base(self, name: str, path: Path | None = None) -> _Base:
        with self._lock:
            base = self._bases.get(name)
        if base is None:
            created = _Base(name, path or tinker_models(self.settings)[name], self.device, self.max_batch)
            with self._lock:
                base = self._bases.setdefault(name, created)
            if base is not created:  # another request started it first
                created.server.close()
        return base

    def ensure(self, base_name: str, model_id: str | None, folder: Path | None) -> _Base:
        """Start ``base_name``'s server and, for a fine-tuned model, load its adapter as ``model_id``.

        A fully fine-tuned model (``adapter: none``: ``folder`` is a whole model) gets a server of
        its own under ``model_id``. Blocking (loads weights); call it from a worker thread."""
        if folder is not None and not (folder / "adapter_config.json").is_file():
            return self._base(model_id, folder)
        base = self._base(base_name)
        if model_id is None:
            return base
        deadline = time.monotonic() + 60
        while base.server.get(model_id) is None:
            try:
                base.server.add_adapter(model_id, str(folder), shown=model_id)  # no run path to the client
            except ModelError as exc:
                # The id is loading for a concurrent request, or an evicted copy is still draining.
                if "already in use" in str(exc) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                # e.g. a DoRA adapter, which cannot share PEFT's mixed-adapter batch
                raise APIError(
                    400,
                    f"Model {model_id} cannot be served: {exc}",
                    param="model",
                    code="model_not_available",
                ) from None
        with self._lock:  # most recently used last; beyond the cap, the oldest leave
            base.loaded[model_id] = None
            base.loaded.move_to_end(model_id)
            evict = list(base.loaded)[: -self.max_adapters] if len(base.loaded) > self.max_adapters else []
            for old in evict:
                del base.loaded[old]
        for old in evict:
            self._remove(base, old)
        return base

    def forget(self, prefix: str) -> None:
        """Stop serving every loaded id equal to ``prefix`` or starting with ``prefix + ':'``
        (a deleted model and its checkpoints)."""
        with self._lock:
            gone = [
                (b, m)
                for b in self._bases.values()
                for m in list(b.loaded)
                if m == prefix or m.startswith(prefix + ":")
            ]
            for b, m in gone:
                del b.loaded[m]
            whole = self._bases.pop(prefix, None) if prefix not in self.settings.base_models else None
        for b, m in gone:
            self._remove(b, m)
        if whole is not None:  # a fully fine-tuned model's own server
            whole.server.close()

    @staticmethod
    def _remove(base: _Base, model_id: str) -> None:
        try:
            base.server.remove_adapter(model_id)
        except KeyError:
            pass

    def close(self) -> None:
        with self._lock:
            bases, self._bases = list(self._bases.values()), {}
        for b in bases:
            b.server.close()


def model_folder(settings, job: dict, step: int | None) -> Path:
    """Where a job's model lives: ``RUN/final`` (adapter or whole model), or for checkpoint
    ``step`` the PEFT adapter folder exported from it (``RUN/served-checkpoints/step-N``)."""
    run = rundir.RunDir(settings.run_dir(job["id"]))
    return run.final if step is None else run.served_checkpoint(step)
