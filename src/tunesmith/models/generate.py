"""Load a model (+ optional adapter) for inference and generate with its chat template."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import ModelError
from .load import load_causal_lm, load_tokenizer
from .template import stop_token_ids


def resolve_model_ref(path: str, adapter: str | None = None) -> tuple[str, str | None]:
    """Map a run dir, adapter dir or model dir to (base model path, adapter path or None).

    ``runs/x`` -> its ``final/``; an adapter folder names its base in ``adapter_config.json``.
    """
    p = Path(path)
    if (p / "final").is_dir() and not (p / "config.json").is_file():
        p = p / "final"
    if adapter is None and (p / "adapter_config.json").is_file():
        cfg = json.loads((p / "adapter_config.json").read_text(encoding="utf-8"))
        base = cfg.get("base_model_name_or_path")
        if not base:
            raise ModelError(f"{p}/adapter_config.json does not name its base model; pass --model BASE --adapter {p}")
        return base, str(p)
    return str(p), adapter


def load_for_inference(model: str, adapter: str | None = None, device: str = "cpu",
                       dtype: torch.dtype = torch.float32):
    """(model in eval mode, tokenizer). The tokenizer comes from the adapter folder when saved there."""
    base, adapter = resolve_model_ref(model, adapter)
    tok_dir = adapter if adapter and Path(adapter, "tokenizer_config.json").is_file() else base
    tokenizer = load_tokenizer(tok_dir)
    lm = load_causal_lm(base, dtype=dtype, device=device)
    if adapter:
        from peft import PeftModel

        if not Path(adapter, "adapter_config.json").is_file():
            raise ModelError(f"adapter folder {adapter} has no adapter_config.json")
        lm = PeftModel.from_pretrained(lm, adapter)
    lm.eval()
    return lm, tokenizer


def format_prompt(tokenizer, prompt, system: str | None = None) -> str:
    """A user prompt (or message list) rendered with the chat template and generation prompt."""
    if not getattr(tokenizer, "chat_template", None):
        return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
    messages = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    if system and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@torch.no_grad()
def generate(model, tokenizer, prompts: list, *, max_new_tokens: int = 128, temperature: float = 0.0,
             top_p: float = 1.0, seed: int = 0, system: str | None = None) -> list[str]:
    """Batched generation (left padding, KV cache), stopping at the template's end-of-turn token."""
    texts = [format_prompt(tokenizer, p, system) for p in prompts]
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    device = next(model.parameters()).device
    enc = {k: v.to(device) for k, v in enc.items()}
    torch.manual_seed(seed)
    stops = stop_token_ids(tokenizer)
    kwargs = dict(max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        kwargs.update(do_sample=False)
    out = model.generate(**enc, **kwargs)
    new = out[:, enc["input_ids"].shape[1]:]
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]
