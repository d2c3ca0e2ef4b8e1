"""Merge a LoRA/DoRA adapter into its base and verify the merged model against the adapter.

The merge runs in fp32. Before anything is written, logits of the merged model on probe
prompts are compared with the adapter model's; if the largest absolute difference exceeds
``tolerance`` the merge fails and nothing is left in ``out``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..errors import ModelError, TunesmithError

PROBES = ["The quick brown fox jumps over the lazy dog.", "Question: what is two plus two?",
          "Once upon a time"]


def probe_batch(tokenizer) -> dict:
    texts = list(PROBES)
    if getattr(tokenizer, "chat_template", None):
        texts.append(tokenizer.apply_chat_template(
            [{"role": "user", "content": "hello, who are you?"}], tokenize=False, add_generation_prompt=True))
    tokenizer.padding_side = "right"
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def merge_adapter(run_or_adapter: str, out: str, *, base: str | None = None,
                  tolerance: float = 1e-3) -> dict:
    """Write the merged model to ``out``; returns {'max_abs_diff', 'tolerance', ...}."""
    from peft import PeftModel

    from ..models.generate import resolve_model_ref
    from ..models.load import load_causal_lm, load_tokenizer
    from ..models.template import stop_token_ids

    base_path, adapter = resolve_model_ref(run_or_adapter)
    if base:
        base_path = base
    if adapter is None:
        raise ModelError(f"{run_or_adapter} holds no adapter (no adapter_config.json); nothing to merge")
    tokenizer = load_tokenizer(adapter if Path(adapter, "tokenizer_config.json").is_file() else base_path)
    model = PeftModel.from_pretrained(load_causal_lm(base_path, dtype=torch.float32), adapter)
    model.eval()
    batch = probe_batch(tokenizer)
    with torch.no_grad():
        expected = model(**batch).logits
        merged = model.merge_and_unload(safe_merge=True)
        got = merged(**batch).logits
    keep = batch["attention_mask"].bool()
    diff = float((expected - got).abs()[keep].max())
    report = {"base": base_path, "adapter": adapter, "max_abs_diff": diff, "tolerance": tolerance,
              "probe_tokens": int(keep.sum())}
    if not diff <= tolerance:
        raise TunesmithError(f"merge verification failed: merged logits differ from the adapter's by "
                             f"{diff:.3g} > tolerance {tolerance:g}; nothing was written")
    out_path = Path(out)
    tmp = out_path.with_name(out_path.name + ".tmp-merge")
    shutil.rmtree(tmp, ignore_errors=True)
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
