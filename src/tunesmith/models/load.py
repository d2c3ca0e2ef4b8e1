"""Load a causal LM and its tokenizer from a local Hugging Face folder, a GGUF file or a Hub id.

Weights are loaded from safetensors only (``use_safetensors=True``); ``trust_remote_code`` is
only ever the operator's explicit config value. A GGUF file is dequantised once into a cached
folder (:mod:`.gguf_import`); the loaded model's ``name_or_path`` stays the file, so adapters
record the file as their base and later commands resolve it the same way. A Hugging Face Hub
id (``meta-llama/Llama-3.2-1B``, :mod:`.hub`) is fetched into the Hub cache where the network
allows and is then an ordinary folder; the id stays the model's name in the same way.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from ..errors import ModelError


def check_model_dir(path: str) -> Path:
    """The HF model folder ``path`` names, else ModelError: a folder itself; a GGUF file its
    dequantised cache folder; a Hub id (``owner/name``, no such local path) its Hub cache snapshot,
    fetched when the network allows (:func:`.hub.hub_snapshot`: offline, one line saying so)."""
    from .hub import hub_snapshot, is_hub_id

    p = Path(path)
    if p.is_file():
        from .gguf_import import resolve_model_path

        return Path(resolve_model_path(p))
    if is_hub_id(str(path)):
        return hub_snapshot(str(path))
    if not p.exists():
        raise ModelError(
            f"model not found: {path} (tunesmith loads a local Hugging Face model folder, a GGUF "
            "file, or a Hugging Face Hub id such as Qwen/Qwen2.5-0.5B where the network allows)"
        )
    if not p.is_dir():
        raise ModelError(f"model path is not a directory: {path}")
    if not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
        raise ModelError(f"{path} has no config.json: not a Hugging Face model folder")
    return p


def load_tokenizer(path: str, chat_template: str | None = None):
    """Fast tokenizer from ``path``; ``chat_template`` (``model.chat_template``) replaces its
    chat template: a .jinja file, or a shipped template by name (:mod:`.named_templates`)."""
    from transformers import AutoTokenizer

    folder = path if Path(path, "tokenizer.json").is_file() else str(check_model_dir(path))
    try:
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except Exception as exc:
        raise ModelError(f"could not load a tokenizer from {path}: {exc}") from None
    if not getattr(tok, "is_fast", False):
        raise ModelError(
            f"the tokenizer in {path} is not a fast tokenizer; tunesmith needs "
            "offset mappings to build loss masks (save it with tokenizer.json)"
        )
    if chat_template:
        from .named_templates import check_markers, template_text

        tok.chat_template = template_text(chat_template)
        check_markers(tok, chat_template, path)
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token  # only used for padded generation batches
    return tok


MODEL_INIT_LOCK = threading.RLock()
"""Held while transformers builds a model. Its loading swaps process-wide state (weight-init
functions, init flags) in and out, so two threads loading at once can leave that state swapped
for good — later loads then keep parameters on the meta device. Servers load models from
request threads, so every model construction in tunesmith takes this lock."""


def load_causal_lm(
    path: str,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
    attn_implementation: str | None = "sdpa",
    quantization=None,
):
    """Load a decoder-only causal LM in ``dtype`` on ``device`` (safetensors weights only).

    ``quantization``: a :class:`tunesmith.models.quantize.QuantSpec` to load the linear layers
    in 4 / 8 bits with bitsandbytes (the rest stays in ``dtype``); None loads full precision.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = str(check_model_dir(path))
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelError(f"could not read the model config in {path}: {exc}") from None
    if getattr(config, "is_encoder_decoder", False):
        raise ModelError(f"{path} is an encoder-decoder model; tunesmith trains decoder-only causal LMs")
    if quantization is not None:
        from .quantize import load_quantized

        return _named(
            load_quantized(
                folder,
                config,
                quantization,
                device=device,
                dtype=dtype,
                attn_implementation=attn_implementation,
                trust_remote_code=trust_remote_code,
            ),
            path,
        )
    kwargs = dict(dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True)
    with MODEL_INIT_LOCK:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                folder, attn_implementation=attn_implementation, **kwargs
            )
        except (ValueError, ImportError) as exc:
            about_attention = "attn" in str(exc).lower() or "sdpa" in str(exc).lower()
            if attn_implementation is None or not about_attention:
                raise ModelError(f"could not load {path} as a causal LM: {exc}") from None
            # Families without SDPA support (e.g. Gemma 2's soft-capping) load with their default.
            model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
        except OSError as exc:
            raise ModelError(
                f"could not load weights from {path}: {exc} (tunesmith loads safetensors only)"
            ) from None
    return _named(model.to(device), path)


def _named(model, path: str):
    """Keep the name the user gave (a GGUF file, not its cache folder) as the model's identity:
    PEFT writes it into adapter_config.json as ``base_model_name_or_path``."""
    if str(path) != getattr(model, "name_or_path", str(path)):
        model.name_or_path = str(path)
        model.config.name_or_path = str(path)
    return model
