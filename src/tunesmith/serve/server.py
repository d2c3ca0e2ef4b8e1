"""``InferenceServer``: one base model, LoRA adapters over it by id, and the batching scheduler.

This is the object other apps reuse (the jobs service mounts it to answer for fine-tuned models)::

    server = InferenceServer("models/tunesmith-base", model_id="tunesmith-base")
    server.add_adapter("ft:colors", "runs/colors/final")   # any time, thread-safe
    server.remove_adapter("ft:colors")                      # new requests get 404 at once;
                                                            # running ones finish first
    app = create_app(server)                                # tunesmith.serve.app

Every model id carries its own tokenizer (the adapter folder's when it saved one, so the chat
template the adapter was trained with is the one served) and its stop token ids. Adapters must be
LoRA adapters trained on this base (same tokenizer vocabulary); DoRA adapters cannot share a
mixed batch in PEFT, so serve their merged model instead (``tunesmith export RUN --format hf``).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .. import rundir
from ..errors import ModelError
from ..models.template import render_chat

log = logging.getLogger("tunesmith.serve")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")


@dataclass
class ModelEntry:
    """A servable model id: the base (``adapter is None``) or one adapter over it."""

    id: str
    path: str
    tokenizer: object
    stop_ids: list[int]
    adapter: str | None = None
    created: int = 0
    owned_by: str = "tunesmith"

    @property
    def adapter_name(self) -> str:
        from .scheduler import BASE

        return self.adapter or BASE


def _folder_id(path: str) -> str:
    """Default model id of a folder: its name, or the run's name for ``runs/x/final``."""
    return rundir.folder_name(path)


def check_model_id(model_id: str) -> str:
    if not isinstance(model_id, str) or not _ID.match(model_id) or model_id == "__base__":
        raise ModelError(
            f"invalid model id {model_id!r}: use letters, digits and . _ : / @ + - "
            "(at most 128 characters, starting with a letter or digit)"
        )
    return model_id


class InferenceServer:
    """Thread-safe registry of model ids over one loaded base, plus its generation scheduler.

    ``device``: "auto" (CUDA when present), "cpu", "cuda", ...; ``dtype``: "auto" (bf16 on CUDA,
    fp32 on CPU) or a torch dtype name. ``context_length`` defaults to the model's
    ``max_position_embeddings``.
    """

    def __init__(
        self,
        base: str,
        *,
        model_id: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        max_batch: int = 16,
        max_waiting: int = 256,
        context_length: int | None = None,
        start: bool = True,
    ):
        import torch

        from ..models.generate import resolve_model_ref
        from ..models.load import load_causal_lm, load_tokenizer
        from ..models.template import stop_token_ids
        from .scheduler import Scheduler

        base_path, adapter = resolve_model_ref(base)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.base_path = base_path
        self.tokenizer = load_tokenizer(base_path)
        model = load_causal_lm(base_path, dtype=self.dtype, device=self.device)
        model.eval()
        model.config.use_cache = True
        self.base_model = model
        ctx = context_length or getattr(model.config, "max_position_embeddings", None) or 2048
        self.scheduler = Scheduler(
            model, device=self.device, context_length=int(ctx), max_batch=max_batch, max_waiting=max_waiting
        )
        self._lock = threading.Lock()
        self._models: dict[str, ModelEntry] = {}
        self._draining: set[str] = set()
        base_id = check_model_id(model_id or _folder_id(base_path))
        self._models[base_id] = ModelEntry(
            base_id, base_path, self.tokenizer, stop_token_ids(self.tokenizer), created=int(time.time())
        )
        self.base_id = base_id
        if adapter:  # ``base`` named an adapter folder or a run: serve it too, under its folder name
            self.add_adapter(check_model_id(_folder_id(base)), adapter)
        if start:
            self.scheduler.start()

    @property
    def context_length(self) -> int:
        return self.scheduler.context_length

    # ---- registry --------------------------------------------------------------------------------
    def models(self) -> list[ModelEntry]:
        with self._lock:
            return list(self._models.values())

    def get(self, model_id: str) -> ModelEntry | None:
        with self._lock:
            return self._models.get(model_id)

    def add_adapter(self, model_id: str, path: str, *, shown: str | None = None) -> ModelEntry:
        """Load the PEFT adapter at ``path`` (a folder or a run dir) and serve it as ``model_id``.

        Blocks until loaded (between two decode steps). Raises ModelError for a bad folder, a
        non-LoRA adapter, a tokenizer that differs from the base's, or an id already in use. Its
        messages name the folder as ``shown`` (default ``path``): an HTTP caller passes the path
        the client gave, so no server path reaches the client.
        """
        from ..models.generate import resolve_model_ref
        from ..models.load import load_tokenizer
        from ..models.template import stop_token_ids

        check_model_id(model_id)
        shown = path if shown is None else shown
        try:
            _, folder = resolve_model_ref(path)
            folder = folder or path
            cfg_file = Path(folder, "adapter_config.json")
            if not cfg_file.is_file():
                raise ModelError(f"{shown}: no adapter_config.json (not a PEFT adapter folder or run)")
            cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ModelError(f"{shown}: adapter_config.json is not valid JSON") from None
        except ModelError as exc:  # resolve_model_ref names the folder as it found it
            raise ModelError(str(exc).replace(str(path), shown)) from None
        if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA":
            kind = cfg.get("peft_type") if isinstance(cfg, dict) else None
            raise ModelError(f"{shown}: adapter type {kind} is not served; only LoRA adapters")
        if cfg.get("use_dora"):
            raise ModelError(
                f"{shown}: DoRA adapters cannot share a batch with other models; serve the merged "
                f"model instead (tunesmith export {shown} --format hf --out DIR)"
            )
        tokenizer = self.tokenizer
        if Path(folder, "tokenizer_config.json").is_file():
            try:
                tokenizer = load_tokenizer(folder)
            except Exception as exc:
                log.warning("tokenizer of adapter %s could not be loaded: %s", folder, exc)
                raise ModelError(f"{shown}: its tokenizer could not be loaded") from None
            if tokenizer.get_vocab() != self.tokenizer.get_vocab():
                raise ModelError(
                    f"{shown}: its tokenizer differs from the base model's; serve its merged model instead"
                )
        with self._lock:
            if model_id in self._models or model_id in self._draining:
                raise ModelError(f"model id {model_id!r} is already in use")
            self._draining.add(model_id)  # reserve the id while loading
        try:
            self.scheduler.call(lambda: self._load_adapter(model_id, folder, shown))
        finally:
            with self._lock:
                self._draining.discard(model_id)
        entry = ModelEntry(
            model_id, folder, tokenizer, stop_token_ids(tokenizer), adapter=model_id, created=int(time.time())
        )
        with self._lock:
            self._models[model_id] = entry
        return entry

    def remove_adapter(self, model_id: str) -> None:
        """Stop serving ``model_id`` now; its weights are freed once its running requests finish."""
        with self._lock:
            entry = self._models.get(model_id)
            if entry is None or entry.adapter is None:
                raise KeyError(model_id)
            del self._models[model_id]
            self._draining.add(model_id)
        threading.Thread(target=self._unload_when_idle, args=(model_id,), daemon=True).start()

    def _unload_when_idle(self, name: str) -> None:
        # The in-use check and the deletion run together on the generation thread, so no
        # request can slip between the queue and the batch in between.
        try:
            while not self.scheduler.call(lambda: self._delete_adapter(name)):
                time.sleep(0.05)
        finally:
            with self._lock:
                self._draining.discard(name)

    def wait_idle_unloads(self, timeout: float = 30) -> None:
        """Block until every removed adapter has been unloaded (tests, shutdown)."""
        end = time.monotonic() + timeout
        while self._draining and time.monotonic() < end:
            time.sleep(0.02)

    def peft_adapters(self) -> list[str]:
        """Adapter names currently loaded in the PEFT model (for tests and /health)."""
        peft = self.scheduler.model if self.scheduler.use_adapter_names else None
        return sorted(peft.peft_config) if peft is not None else []

    # ---- run on the generation thread --------------------------------------------------------------
    def _load_adapter(self, name: str, folder: str, shown: str) -> None:
        from ..models.adapters import check_adapter_dir
        from ..models.load import MODEL_INIT_LOCK
        from ..models.quantize import import_peft

        import_peft()
        from peft import PeftModel

        sched = self.scheduler
        try:
            check_adapter_dir(folder)  # safetensors only: PEFT would fall back to a pickle
            with MODEL_INIT_LOCK:  # module construction touches process-wide init state
                if not sched.use_adapter_names:
                    sched.model = PeftModel.from_pretrained(self.base_model, folder, adapter_name=name)
                    sched.use_adapter_names = True
                else:
                    sched.model.load_adapter(folder, adapter_name=name)
        except Exception as exc:
            log.warning("adapter %s could not be loaded", folder, exc_info=True)
            raise ModelError(
                f"could not load adapter {shown}: {str(exc).replace(str(folder), shown)}"
            ) from None
        sched.model.eval()
        sched.loaded.add(name)

    def _delete_adapter(self, name: str) -> bool:
        """Unload ``name`` unless a waiting or running request still uses it (then False)."""
        sched = self.scheduler
        if name in sched.adapters_in_use():
            return False
        sched.loaded.discard(name)
        if not sched.use_adapter_names or name not in sched.model.peft_config:
            return True
        if len(sched.model.peft_config) == 1:
            # PEFT keeps at least one adapter; with the last one gone, serve the bare base again.
            sched.model = sched.model.unload()
            sched.model.eval()
            sched.use_adapter_names = False
        else:
            sched.model.delete_adapter(name)
        return True

    # ---- tokenisation ------------------------------------------------------------------------------
    def encode_chat(self, entry: ModelEntry, messages: list[dict]) -> list[int]:
        """Prompt ids: the model's chat template with the generation prompt."""
        tok = entry.tokenizer
        if not getattr(tok, "chat_template", None):
            raise ModelError(f"model {entry.id!r} has no chat template; use /v1/completions")
        text = render_chat(tok, messages, add_generation_prompt=True, error=ValueError)
        return tok.encode(text, add_special_tokens=False)

    def encode_text(self, entry: ModelEntry, prompt: str) -> list[int]:
        return entry.tokenizer.encode(prompt, add_special_tokens=True)

    def close(self) -> None:
        self.scheduler.close()
