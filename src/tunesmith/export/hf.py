"""``tunesmith export RUN --format hf|gguf``: a verified merged folder, or GGUF + Ollama Modelfile.

``RUN`` is a run directory (its ``final/``), an adapter folder, or a full model folder.

* hf: adapters are merged with :func:`tunesmith.export.merge.merge_adapter` (fp32, merged-vs-
  adapter logits checked on probe prompts, nothing written on failure); a full model is re-saved
  and its reloaded logits compared with the source's. Either way the folder is then checked to
  carry the tokenizer, the training chat template and a generation config whose ``eos_token_id``
  lists the template's stop ids (so ``generate`` stops at end of turn, not at the context limit).
* gguf: the hf step first (into a temporary folder) when RUN holds an adapter, then
  :func:`tunesmith.export.gguf.write_gguf` (verified read-back) and an Ollama ``Modelfile``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

from ..errors import ModelError, TunesmithError


def _save_full(src: str, out: Path, tolerance: float) -> dict:
    from transformers import GenerationConfig

    from ..models.load import load_causal_lm, load_tokenizer
    from ..models.template import stop_token_ids
    from .merge import probe_batch

    tokenizer = load_tokenizer(src)
    model = load_causal_lm(src, dtype=torch.float32).eval()
    tmp = out.with_name(out.name + ".tmp-export")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    gen = getattr(model, "generation_config", None) or GenerationConfig()
    gen.eos_token_id = stop_token_ids(tokenizer)
    gen.save_pretrained(tmp)
    batch = probe_batch(tokenizer)
    reloaded = load_causal_lm(str(tmp), dtype=torch.float32).eval()
    with torch.no_grad():
        diff = float(
            (model(**batch).logits - reloaded(**batch).logits).abs()[batch["attention_mask"].bool()].max()
        )
    if not diff <= tolerance:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TunesmithError(
            f"export verification failed: re-saved logits differ by {diff:.3g} > {tolerance:g}"
        )
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return {"base": src, "adapter": None, "max_abs_diff": diff, "tolerance": tolerance}


def check_hf_folder(folder: str, expected_template: str | None) -> dict:
    """Raise unless ``folder`` has the tokenizer, chat template and stop ids; returns what it found."""
    from ..models.load import load_tokenizer
    from ..models.template import stop_token_ids

    tokenizer = load_tokenizer(folder)
    if (tokenizer.chat_template or None) != (expected_template or None):
        raise ModelError(f"{folder}: the exported chat template differs from the training template")
    gen_file = Path(folder, "generation_config.json")
    if not gen_file.is_file():
        raise ModelError(f"{folder}: no generation_config.json")
    eos = json.loads(gen_file.read_text(encoding="utf-8")).get("eos_token_id")
    eos = eos if isinstance(eos, list) else [eos]
    stops = stop_token_ids(tokenizer)
    if not set(stops) <= set(eos):
        raise ModelError(f"{folder}: generation_config eos_token_id {eos} lacks the stop ids {stops}")
    return {"chat_template": bool(tokenizer.chat_template), "stop_ids": stops}


def _training_template(run: str, base_override: str | None = None) -> str | None:
    from ..models.generate import resolve_model_ref
    from ..models.load import load_tokenizer

    base, adapter = resolve_model_ref(run)
    base = base_override or base
    folder = adapter if adapter and Path(adapter, "tokenizer_config.json").is_file() else base
    return load_tokenizer(folder).chat_template


def export_hf(run: str, out: str, *, tolerance: float = 1e-3, base: str | None = None) -> dict:
    """Merged (or re-saved) model folder at ``out``, verified; returns the report.

    ``base`` overrides the base model an adapter names (``tunesmith merge --model``)."""
    from ..models.generate import resolve_model_ref
    from .merge import merge_adapter

    template = _training_template(run, base)
    named_base, adapter = resolve_model_ref(run)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    report = (
        merge_adapter(run, out, base=base, tolerance=tolerance)
        if adapter
        else _save_full(base or named_base, out_path, tolerance)
    )
    report.update(check_hf_folder(out, template))
    report["format"], report["out"] = "hf", str(out_path)
    (out_path / "export_report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report


def export_gguf(
    run: str,
    out: str,
    *,
    quant: str = "f16",
    tolerance: float = 1e-3,
    modelfile: bool = True,
    base: str | None = None,
    threads: int | None = None,
) -> dict:
    """``out/<name>-<quant>.gguf`` (+ ``out/<name>-<quant>.Modelfile``); merges an adapter first (verified).

    ``base`` overrides the base model an adapter names, as in :func:`export_hf`."""
    from ..models.generate import resolve_model_ref
    from ..models.gguf_import import resolve_model_path
    from ..models.load import load_tokenizer
    from .gguf import write_gguf
    from .ollama import modelfile as make_modelfile

    named_base, adapter = resolve_model_ref(run)
    base = base or named_base
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = Path(run).resolve().name
    report: dict = {"format": "gguf", "out": str(out_dir)}
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".merge-") as tmp:
        src = resolve_model_path(base)  # a GGUF base (re-quantised as asked): its dequantised folder
        if adapter:
            merged = Path(tmp, "merged")
            report["merge"] = export_hf(run, str(merged), tolerance=tolerance, base=base)
            src = str(merged)
        gguf_file = out_dir / f"{name}-{quant}.gguf"
        report["gguf"] = write_gguf(src, str(gguf_file), quant=quant, name=name, threads=threads)
        if modelfile:
            tokenizer = load_tokenizer(src)
            ctx = json.loads(Path(src, "config.json").read_text(encoding="utf-8")).get(
                "max_position_embeddings"
            )
            text = make_modelfile(gguf_file.name, tokenizer, context_length=ctx)
            # Named after its GGUF, so exports of several quants into one folder each keep theirs.
            modelfile_path = out_dir / f"{gguf_file.stem}.Modelfile"
            modelfile_path.write_text(text, encoding="utf-8")
            report["modelfile"] = str(modelfile_path)
    (out_dir / "export_report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report
