"""Merge a LoRA/DoRA adapter into its base and verify the merged model against the adapter.

The merge runs in fp32. Before anything is written, logits of the merged model on probe
prompts are compared with the adapter model's; if the largest absolute difference exceeds
``tolerance`` the merge fails and nothing is left in ``out``.

An adapter trained on a quantised base (QLoRA, ``model.load_in_4bit`` / ``load_in_8bit``) was
trained against the *dequantised* weights, so that is what it is merged into: the base is
loaded quantised exactly as in training (the reference logits), its quantised layers are
dequantised into an fp32 copy of the model, and the adapter is merged there in fp32. Nothing is
re-quantised, and the result is a plain fp32 model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..errors import ModelError, TunesmithError
from ..models.template import render_chat
from ..progress import TaskProgress

PROBES = [
    "The quick brown fox jumps over the lazy dog.",
    "Question: what is two plus two?",
    "Once upon a time",
]


def probe_batch(tokenizer) -> dict:
    texts = list(PROBES)
    if getattr(tokenizer, "chat_template", None):
        texts.append(
            render_chat(
                tokenizer, [{"role": "user", "content": "hello, who are you?"}], add_generation_prompt=True
            )
        )
    tokenizer.padding_side = "right"
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def run_quantization(adapter: str):
    """The :class:`QuantSpec` the run that produced ``adapter`` (``RUN/final``) trained with,
    from its ``config.resolved.yaml``; None when unquantised or unknown."""
    import yaml

    from .. import rundir
    from ..models.quantize import spec_from_dict

    run = rundir.RunDir(Path(adapter).parent)
    if not rundir.is_final(adapter) or not run.resolved_config.is_file():
        return None
    try:
        cfg = run.read_resolved_config()
    except yaml.YAMLError:
        return None
    return spec_from_dict(cfg.get("model") if isinstance(cfg, dict) else None)


def _merge_quantized(base_path: str, adapter: str, spec, batch):
    """(reference logits of the adapter on the quantised base, merged fp32 model)."""
    from ..models.adapters import open_adapter
    from ..models.load import load_causal_lm
    from ..models.quantize import dequantize_into

    quantized = load_causal_lm(base_path, dtype=torch.float32, quantization=spec)
    reference = open_adapter(quantized, adapter)
    reference.eval()
    with torch.no_grad():
        expected = reference(**batch).logits.float()
    full = load_causal_lm(base_path, dtype=torch.float32)
    dequantize_into(reference.get_base_model(), full)
    del reference, quantized
    model = open_adapter(full, adapter)
    model.eval()
    with torch.no_grad():
        merged = model.merge_and_unload(safe_merge=True)
    return expected, merged


def merge_adapter(
    run_or_adapter: str, out: str, *, base: str | None = None, tolerance: float = 1e-3, quantization="auto"
) -> dict:
    """Write the merged model to ``out``; returns {'max_abs_diff', 'tolerance', ...}.

    ``quantization``: the base's quantisation during training — ``"auto"`` reads it from the
    run's resolved config (``RUN/final`` adapters), a ``QuantSpec``, or None for a
    full-precision base.
    """
    from ..models.generate import resolve_model_ref

    base_path, adapter = resolve_model_ref(run_or_adapter)
    if base:
        base_path = base
    if adapter is None:
        raise ModelError(f"{run_or_adapter} holds no adapter (no adapter_config.json); nothing to merge")
    with TaskProgress(f"merging {Path(adapter).name} into {Path(base_path).name}") as progress:
        return _merge(base_path, adapter, out, tolerance, quantization, progress)


def _merge(base_path: str, adapter: str, out: str, tolerance: float, quantization, progress) -> dict:
    from ..models.adapters import open_adapter
    from ..models.load import load_causal_lm, load_tokenizer
    from ..models.template import stop_token_ids

    progress.stage("loading the base and the adapter")
    tokenizer = load_tokenizer(adapter if Path(adapter, "tokenizer_config.json").is_file() else base_path)
    batch = probe_batch(tokenizer)
    spec = run_quantization(adapter) if quantization == "auto" else quantization
    if spec is not None:
        expected, merged = _merge_quantized(base_path, adapter, spec, batch)
        with torch.no_grad():
            got = merged(**batch).logits
    else:
        model = open_adapter(load_causal_lm(base_path, dtype=torch.float32), adapter)
        model.eval()
        progress.stage("merging and checking the merged logits")
        with torch.no_grad():
            expected = model(**batch).logits
            merged = model.merge_and_unload(safe_merge=True)
            got = merged(**batch).logits
    keep = batch["attention_mask"].bool()
    diff = float((expected - got).abs()[keep].max())
    report = {
        "base": base_path,
        "adapter": adapter,
        "max_abs_diff": diff,
        "tolerance": tolerance,
        "probe_tokens": int(keep.sum()),
    }
    if spec is not None:
        report["dequantized_from"] = spec.describe()
    if not diff <= tolerance:
        raise TunesmithError(
            f"merge verification failed: merged logits differ from the adapter's by "
            f"{diff:.3g} > tolerance {tolerance:g}; nothing was written"
        )
    out_path = Path(out)
    tmp = out_path.with_name(out_path.name + ".tmp-merge")
    shutil.rmtree(tmp, ignore_errors=True)
    progress.stage(f"saving to {out_path}")
    merged.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    gen = merged.generation_config
    gen.eos_token_id = stop_token_ids(tokenizer)
    gen.save_pretrained(tmp)
    (tmp / "merge_report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    if out_path.exists():
        shutil.rmtree(out_path)
    tmp.rename(out_path)
    return report
