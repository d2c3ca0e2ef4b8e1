"""Load a model (+ optional adapter) for inference and generate with its chat template."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .. import rundir
from ..errors import ModelError
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


@torch.no_grad()
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
) -> list[dict]:
    """Generate a reply to each prompt (token ids); returns ``{"text", "n_tokens", "stopped"}`` each.

    Prompts are sorted by length and generated ``batch_size`` at a time (all at once when None)
    with left padding and the KV cache; each reply ends at the first stop token (the template's
    end-of-turn token and EOS by default), which is not part of ``text``; ``stopped`` is False
    when the reply ran into ``max_new_tokens``. Greedy when ``temperature`` is 0. The global RNG
    state is left untouched (sampling runs in a forked RNG seeded with ``seed``), so generating
    in the middle of training does not change the training run.
    """
    stops = list(stop_ids) if stop_ids is not None else stop_token_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops[0] if stops else 0)
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    size = batch_size or max(1, len(prompts))
    kwargs = dict(
        max_new_tokens=max_new_tokens, eos_token_id=stops or None, pad_token_id=pad_id, use_cache=True
    )
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    results: list[dict | None] = [None] * len(prompts)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), padded_attention(model):
        torch.manual_seed(seed)
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            width = max(len(prompts[i]) for i in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                n = len(prompts[i])
                ids[row, width - n :] = torch.tensor(prompts[i], dtype=torch.long)
                mask[row, width - n :] = 1
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
            for row, i in enumerate(chunk):
                new = out[row, width:].tolist()
                cut = next((k for k, t in enumerate(new) if t in stops), None)
                reply = new if cut is None else new[:cut]
                results[i] = {
                    "text": tokenizer.decode(reply, skip_special_tokens=True).strip(),
                    "n_tokens": len(reply),
                    "stopped": cut is not None,
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
) -> list[str]:
    """Batched generation (left padding, KV cache), stopping at the template's end-of-turn token.

    ``prompts`` are user strings or message lists, rendered with the chat template."""
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
    )
    return [r["text"] for r in out]
