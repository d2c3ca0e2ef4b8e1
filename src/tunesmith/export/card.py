"""``tunesmith export RUN --format adapter``: a clean PEFT adapter folder with a model card.

The folder holds only what loading needs (``adapter_config.json``, ``adapter_model.safetensors``,
the tokenizer files with the training chat template) plus ``README.md``: base model, method,
data fingerprint, hyperparameters (from ``config.resolved.yaml``, which only the run that trained
the weights writes: tunesmith.run), parameter counts and an eval summary from ``metrics.jsonl`` /
``run.json``. The base model is named as elsewhere people can find it (a Hub id, a GGUF file
name, a folder name: :func:`tunesmith.models.hub.model_name`), never by a local path.
Copied weights are checked byte for byte.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .. import rundir
from ..errors import ModelError
from ..hashing import sha256_file
from ..models.hub import model_name

KEEP = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
)


def run_dir_of(adapter_folder: Path) -> Path | None:
    """The run directory an adapter folder came from (``runs/x`` for ``runs/x/final``), if any."""
    return rundir.run_of(adapter_folder)


def eval_summary(run_dir: Path | None) -> dict:
    """Final train loss, steps, first/last/best eval loss from ``run.json`` and ``metrics.jsonl``."""
    if run_dir is None:
        return {}
    out: dict = {}
    run = rundir.RunDir(run_dir)
    info = run.read_run_info()
    result = info.get("result") or {}
    for key in ("steps", "final_loss", "eval_loss"):
        if result.get(key) is not None:
            out[key] = result[key]
    if run.metrics.is_file():
        evals = [row for row in run.read_metrics(skip_bad=True) if row.get("eval_loss") is not None]
        if evals:
            out["eval_loss_first"] = evals[0]["eval_loss"]
            out["eval_loss_last"] = evals[-1]["eval_loss"]
            best = min(evals, key=lambda r: r["eval_loss"])
            out["eval_loss_best"], out["eval_loss_best_step"] = best["eval_loss"], best.get("step")
            out["evaluations"] = len(evals)
    return out


def model_card(adapter_cfg: dict, run_dir: Path | None) -> str:
    """README.md text with YAML front matter (``base_model``, ``library_name: peft``)."""
    import yaml

    base_path = adapter_cfg.get("base_model_name_or_path")
    base = model_name(base_path) if base_path else "unknown"
    run = rundir.RunDir(run_dir) if run_dir else None
    info = run.read_run_info() if run else {}
    resolved = {}
    if run and run.resolved_config.is_file():
        resolved = run.read_resolved_config()
    method = resolved.get("method", "unknown")
    front = {"base_model": base, "library_name": "peft", "tags": ["tunesmith", method, "lora"]}
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# LoRA adapter for `{base}`",
        "",
        f"Trained with tunesmith ({method}). Load it with PEFT over the base model, serve it with "
        "`tunesmith serve --model BASE --adapter NAME=THIS_FOLDER`, or merge it with "
        "`tunesmith export THIS_FOLDER --format hf --out DIR`.",
        "",
        "## Facts",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{base}` |",
        f"| method | {method} |",
    ]
    if info.get("data_fingerprint"):
        lines.append(f"| data fingerprint (sha256/16 of the training files) | `{info['data_fingerprint']}` |")
    params = info.get("parameters") or {}
    if params:
        lines.append(
            f"| trainable / total parameters | {params.get('trainable'):,} / {params.get('total'):,} |"
        )
    lora = {k: adapter_cfg.get(k) for k in ("r", "lora_alpha", "lora_dropout", "use_dora", "use_rslora")}
    lora["target_modules"] = sorted(adapter_cfg.get("target_modules") or [])
    lines += ["", "## Adapter", "", "```yaml", yaml.safe_dump(lora, sort_keys=False).strip(), "```"]
    if resolved:
        keep = {k: resolved[k] for k in ("model", "data", "adapter", "train") if k in resolved}
        if isinstance(keep.get("model"), dict) and keep["model"].get("path"):
            keep["model"] = {**keep["model"], "path": model_name(keep["model"]["path"])}
        lines += [
            "",
            "## Hyperparameters (resolved config)",
            "",
            "```yaml",
            yaml.safe_dump(keep, sort_keys=False).strip(),
            "```",
        ]
    summary = eval_summary(run_dir)
    lines += ["", "## Evaluation", ""]
    if summary:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in summary.items()]
    else:
        lines.append("No run metrics were found next to this adapter.")
    versions = info.get("versions") or {}
    if versions:
        lines += ["", "## Software", "", ", ".join(f"{k} {v}" for k, v in versions.items())]
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def export_adapter(run: str, out: str) -> dict:
    """Copy the adapter of ``run`` (run dir or adapter folder) to ``out`` with a model card."""
    from ..models.generate import resolve_model_ref

    _, adapter = resolve_model_ref(run)
    if adapter is None:
        raise ModelError(f"{run} holds no adapter (no adapter_config.json); use --format hf for full models")
    src = Path(adapter)
    if not (src / "adapter_model.safetensors").is_file():
        raise ModelError(f"{src}: no adapter_model.safetensors")
    out_path = Path(out)
    tmp = out_path.with_name(out_path.name + ".tmp-export")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    copied = []
    for name in KEEP:
        if (src / name).is_file():
            shutil.copyfile(src / name, tmp / name)
            copied.append(name)
    if sha256_file(src / "adapter_model.safetensors") != sha256_file(tmp / "adapter_model.safetensors"):
        raise ModelError("adapter export: the copied weights differ from the source")  # pragma: no cover
    cfg = json.loads((src / "adapter_config.json").read_text(encoding="utf-8"))
    run_dir = run_dir_of(src)
    (tmp / "README.md").write_text(model_card(cfg, run_dir), encoding="utf-8")
    if out_path.exists():
        shutil.rmtree(out_path)
    tmp.rename(out_path)
    return {
        "format": "adapter",
        "out": str(out_path),
        "files": copied + ["README.md"],
        "run": str(run_dir) if run_dir else None,
        "eval": eval_summary(run_dir),
    }
