"""Minimal ``/v1/chat/completions`` and ``/v1/completions`` for base, ``ft:`` and checkpoint models.

Models load through :mod:`tunesmith.models.generate` (base + PEFT adapter from the job's
``final/`` folder). A checkpoint model (``…:ckpt-step-N``) is the base with the job's adapter
attached exactly as training attached it (the resolved run config) and the checkpoint's
trainable tensors restored — the same code path the engine resumes with, so names and shapes
are checked. A small LRU cache keeps the last few models; one lock serialises generation.
Streaming, tools and logprobs are not supported (a clear 400).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from pathlib import Path

from .errors import APIError, model_not_found

CACHE_SIZE = 2
MAX_NEW_TOKENS = 512


class Inference:
    def __init__(self, settings, store):
        self.settings, self.store = settings, store
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def locate(self, job: dict, step: int | None) -> tuple[str, str | None, str | None]:
        """(base folder, adapter folder or None, checkpoint folder or None) of a job's model."""
        base = self.settings.base_models.get(job["model"])
        run = self.settings.run_dir(job["id"])
        if base is None:
            raise model_not_found(job["model"])
        if step is None:
            final = run / "final"
            if not final.is_dir():
                raise model_not_found(job["fine_tuned_model"] or job["id"])
            return str(base), str(final), None
        ckpt = run / "checkpoints" / f"step-{step:06d}"
        if not (ckpt / "COMMITTED").is_file():
            raise model_not_found(f"checkpoint step {step}")
        return str(base), None, str(ckpt)

    def _load(self, target: tuple):
        if target in self._cache:
            self._cache.move_to_end(target)
            return self._cache[target]
        base, adapter, ckpt = target
        if ckpt is None:
            from ..models.generate import load_for_inference

            loaded = load_for_inference(base, adapter)
        else:
            loaded = _load_checkpoint(base, Path(ckpt))
        self._cache[target] = loaded
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return loaded

    def _generate(self, target: tuple, prompts: list, body: dict) -> tuple[list[str], object, int]:
        if body.get("stream"):
            raise APIError(400, "stream=true is not supported by this server.", param="stream")
        n = body.get("n", 1)
        if n not in (1, None):
            raise APIError(400, "Only n=1 is supported.", param="n")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 128
        if not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_NEW_TOKENS:
            raise APIError(400, f"max_tokens must be an integer between 1 and {MAX_NEW_TOKENS}.",
                           param="max_tokens")
        temperature = body.get("temperature", 0.0) or 0.0
        top_p = body.get("top_p", 1.0) or 1.0
        if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
            raise APIError(400, "temperature must be between 0 and 2.", param="temperature")
        from ..models.generate import generate

        with self._lock:
            model, tok = self._load(target)
            texts = generate(model, tok, prompts, max_new_tokens=max_tokens, temperature=float(temperature),
                             top_p=float(top_p), seed=int(body.get("seed") or 0))
        return texts, tok, max_tokens

    def chat(self, target: tuple, body: dict) -> dict:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            raise APIError(400, "messages must be a non-empty array of {role, content} objects with string "
                           "content.", param="messages")
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        (text,), tok, max_tokens = self._generate(target, [messages], body)
        from ..models.generate import format_prompt

        usage = _usage(tok, format_prompt(tok, messages), text, max_tokens)
        return {"id": "chatcmpl-" + secrets.token_hex(12), "object": "chat.completion", "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": None, "finish_reason": _finish(usage, max_tokens)}],
                "usage": usage}

    def complete(self, target: tuple, body: dict) -> dict:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise APIError(400, "prompt must be a string.", param="prompt")
        (text,), tok, max_tokens = self._generate(target, [prompt], body)
        usage = _usage(tok, prompt, text, max_tokens)
        return {"id": "cmpl-" + secrets.token_hex(12), "object": "text_completion", "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "text": text, "logprobs": None,
                             "finish_reason": _finish(usage, max_tokens)}],
                "usage": usage}


def _usage(tok, prompt_text: str, completion: str, max_tokens: int) -> dict:
    """Token counts by re-encoding the texts (decoding then encoding can merge or split a few
    tokens, so the completion count is capped at what generation was allowed)."""
    p = len(tok(prompt_text, add_special_tokens=False)["input_ids"])
    c = min(max_tokens, len(tok(completion, add_special_tokens=False)["input_ids"]))
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _finish(usage: dict, max_tokens: int) -> str:
    return "length" if usage["completion_tokens"] >= max_tokens else "stop"


def _load_checkpoint(base: str, ckpt: Path):
    """The base model with the run's adapter attached as in training and the checkpoint's
    trainable tensors restored; (model in eval mode, tokenizer)."""
    from ..config import load_config
    from ..engine.checkpoint import load_checkpoint, restore_trainable
    from ..models.adapters import attach_adapter
    from ..models.load import load_causal_lm, load_tokenizer

    run = ckpt.parent.parent
    cfg = load_config(run / "config.resolved.yaml")
    tokenizer = load_tokenizer(cfg.model.tokenizer or base, cfg.model.chat_template)
    model = attach_adapter(load_causal_lm(base, device="cpu"), cfg.adapter)
    restore_trainable(model, load_checkpoint(ckpt)["trainable"], ckpt)
    model.eval()
    return model, tokenizer
