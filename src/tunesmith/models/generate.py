"""Load a model (+ optional adapter) for inference and generate with its chat template."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import rundir
from ..errors import ModelError
from .adapters import unwrap
from .attention import padded_attention
from .load import load_causal_lm, load_tokenizer
from .template import render_chat, stop_token_ids


def resolve_model_ref(path: str, adapter: str | None = None) -> tuple[str, str | None]:
    """Map a run dir, adapter dir or model dir to (base model path, adapter path or None).

    ``runs/x`` -> its ``final/`` (:func:`tunesmith.rundir.model_folder`); an adapter folder names its base in ``adapter_config.json``.
    """
    p = rundir.model_folder(path)
    if adapter is None and (p / "adapter_config.json").is_file():
        cfg = json.loads((p / "adapter_config.json").read_text(encoding="utf-8"))
        base = cfg.get("base_model_name_or_path")
        if not base:
            raise ModelError(
                f"{p}/adapter_config.json does not name its base model; pass --model BASE --adapter {p}"
            )
        return base, str(p)
    return str(p), adapter


def load_for_inference(
    model: str, adapter: str | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32
):
    """(model in eval mode, tokenizer). The tokenizer comes from the adapter folder when saved there."""
    base, adapter = resolve_model_ref(model, adapter)
    tok_dir = adapter if adapter and Path(adapter, "tokenizer_config.json").is_file() else base
    tokenizer = load_tokenizer(tok_dir)
    lm = load_causal_lm(base, dtype=dtype, device=device)
    if adapter:
        from .adapters import open_adapter

        lm = open_adapter(lm, adapter)
    lm.eval()
    return lm, tokenizer


def format_prompt(tokenizer, prompt, system: str | None = None) -> str:
    """A user prompt (or message list) rendered with the chat template and generation prompt."""
    if not getattr(tokenizer, "chat_template", None):
        return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
    messages = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    if system and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system})
    return render_chat(tokenizer, messages, add_generation_prompt=True)


def prompt_token_ids(tokenizer, prompt, system: str | None = None, *, templated: bool = True) -> list[int]:
    """Token ids of a prompt exactly as training renders it before the reply.

    A message list (or, with ``templated``, a user string) goes through the chat template with
    the generation prompt; a plain string with ``templated=False`` (prompt/completion data, which
    training renders without a template) is tokenised as is, after BOS where the tokenizer adds one.
    """
    if templated or not isinstance(prompt, str):
        return tokenizer(format_prompt(tokenizer, prompt, system), add_special_tokens=False)["input_ids"]
    bos = (
        [tokenizer.bos_token_id]
        if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False)
        else []
    )
    return bos + tokenizer.encode(prompt, add_special_tokens=False)


@contextlib.contextmanager
def generation_mode(model, *, neutral_config: bool = False):
    """Eval mode and a padding-aware attention for the block; the model's setup restored after.

    tunesmith's training attention (``tunesmith_varlen``) has no mask builder registered with
    transformers, so a left-padded batch would reach it with no padding mask at all:
    :func:`~tunesmith.models.attention.padded_attention` switches to SDPA (eager for soft-capped
    families) meanwhile. ``neutral_config`` also replaces the model's ``generation_config``
    (which may carry ``top_k``, repetition penalties …) by an empty one, so that sampling draws
    from exactly ``softmax(logits / T)`` (nucleus-truncated by ``top_p``) — the distribution
    whose log-probs GRPO's loss uses.
    """
    from transformers import GenerationConfig

    hf = unwrap(model)
    was_training = model.training
    previous_gen = getattr(hf, "generation_config", None)
    model.eval()
    try:
        with padded_attention(model):
            if neutral_config:
                hf.generation_config = GenerationConfig()
            yield model
    finally:
        if neutral_config and previous_gen is not None:
            hf.generation_config = previous_gen
        model.train(was_training)


@dataclass(frozen=True)
class Sampling:
    """How the next token is picked: the argmax when ``temperature`` is 0, else a draw from
    ``softmax(logits / temperature)`` truncated by ``top_p`` and ``top_k`` (None: as the model's
    generation config says)."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None

    def generate_kwargs(self) -> dict:
        """These settings as ``transformers``' ``generate`` keywords."""
        if self.temperature <= 0:
            return dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        out = dict(do_sample=True, temperature=self.temperature, top_p=self.top_p)
        return out if self.top_k is None else {**out, "top_k": self.top_k}


@torch.no_grad()
def generate_completions(
    model,
    prompts: list[list[int]],
    sampling: Sampling,
    *,
    max_new_tokens: int,
    stop_ids: list[int],
    pad_id: int,
    seed: int | None,
    batch_size: int | None = None,
    neutral_config: bool = False,
    progress=None,
) -> list[list[int]]:
    """The completion of each prompt (token ids, in ``prompts``' order): left-pad, generate with
    the KV cache, strip the prompt and the padding.

    A completion ends with (and includes) its first stop token, or has ``max_new_tokens``
    tokens when none came. Prompts are generated ``batch_size`` at a time in the given order
    (all at once when None), under :func:`generation_mode`, picking tokens as ``sampling`` says.
    ``progress(n)``, when given, is called after each batch with the prompts it completed.

    Randomness — the one policy of every caller, stated by ``seed`` (no default):

    - ``seed`` an int: sampling draws from a private RNG stream seeded with it and the global
      torch RNG is left as it was, so the output depends only on the model, prompts, settings
      and seed (evaluation, inference: generating mid-training does not change the run);
    - ``seed`` None: sampling draws from the global torch RNG (training-time sampling: GRPO
      rollouts, on-policy distillation), which the engine checkpoints, so a resumed run draws
      the same samples as an uninterrupted one.
    """
    stops = set(stop_ids)
    kwargs = dict(
        max_new_tokens=max_new_tokens,
        eos_token_id=list(stop_ids) or None,
        pad_token_id=pad_id,
        use_cache=True,
        **sampling.generate_kwargs(),
    )
    device = next(model.parameters()).device
    size = batch_size or max(1, len(prompts))
    rng = contextlib.nullcontext() if seed is None else _seeded_rng(seed, device)
    completions = []
    with rng, generation_mode(model, neutral_config=neutral_config):
        for start in range(0, len(prompts), size):
            chunk = prompts[start : start + size]
            width = max(len(p) for p in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, p in enumerate(chunk):  # left padding: every prompt ends at the same column
                ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
                mask[row, width - len(p) :] = 1
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
            for row in out[:, width:].tolist():
                cut = next((k + 1 for k, t in enumerate(row) if t in stops), len(row))
                completions.append(row[:cut])
            if progress is not None:
                progress(len(chunk))
    return completions


@contextlib.contextmanager
def _seeded_rng(seed: int, device: torch.device):
    """The global RNG (and ``device``'s, on CUDA) seeded with ``seed``; restored afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def generate_ids(
    model,
    tokenizer,
    prompts: list[list[int]],
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int | None = None,
    stop_ids: list[int] | None = None,
    progress=None,
) -> list[dict]:
    """Generate a reply to each prompt (token ids); returns ``{"text", "n_tokens", "stopped"}`` each.

    Prompts are sorted by length and generated ``batch_size`` at a time (all at once when None)
    by :func:`generate_completions`; each reply ends at the first stop token (the template's
    end-of-turn token and EOS by default), which is not part of ``text``; ``stopped`` is False
    when the reply ran into ``max_new_tokens``. Greedy when ``temperature`` is 0. Sampling uses
    a private RNG seeded with ``seed``: the global RNG is left untouched. ``progress(n)``: as
    :func:`generate_completions`.
    """
    stops = list(stop_ids) if stop_ids is not None else stop_token_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops[0] if stops else 0)
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    completions = generate_completions(
        model,
        [prompts[i] for i in order],
        Sampling(temperature, top_p),
        max_new_tokens=max_new_tokens,
        stop_ids=stops,
        pad_id=pad_id,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
    )
    results: list[dict | None] = [None] * len(prompts)
    for i, new in zip(order, completions):
        stopped = bool(new) and new[-1] in stops
        reply = new[:-1] if stopped else new
        results[i] = {
            "text": tokenizer.decode(reply, skip_special_tokens=True).strip(),
            "n_tokens": len(reply),
            "stopped": stopped,
        }
    return results


def generate(
    model,
    tokenizer,
    prompts: list,
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    system: str | None = None,
    batch_size: int | None = None,
    progress=None,
) -> list[str]:
    """Batched generation (left padding, KV cache), stopping at the template's end-of-turn token.

    ``prompts`` are user strings or message lists, rendered with the chat template.
    ``progress(n)``: as :func:`generate_completions`."""
    ids = [prompt_token_ids(tokenizer, p, system) for p in prompts]
    out = generate_ids(
        model,
        tokenizer,
        ids,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
    )
    return [r["text"] for r in out]
