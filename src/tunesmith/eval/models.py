"""Which models an evaluation compares, and loading each one for scoring.

The target of ``tunesmith eval TARGET`` is a run config (YAML), a run directory, or a model /
adapter folder. Models are then named by *specs*:

- ``final``: the run's ``final/`` (adapter or full weights) — the default for a run;
- ``base``: the model the run started from (``model.path``, or the base an adapter names);
- ``latest`` / ``step-N``: a training checkpoint ``RUN/checkpoints/step-00000N/`` (base + the
  run's adapter settings + the checkpoint's trainable tensors);
- any path: a run directory (its ``final/``), an adapter folder (over the base it names), a
  merged / full model folder, or a checkpoint directory of the target run.

Every model of one evaluation uses the same tokenizer and chat template (the run's), so they
all see identical prompts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import rundir
from ..config import RunConfig, load_config
from ..engine import checkpoint as ckpt
from ..errors import CheckpointError, ConfigError, ModelError
from ..models.generate import resolve_model_ref
from ..models.load import load_causal_lm, load_tokenizer


@dataclass
class RunContext:
    """What the evaluation target says about the run: its directory, config and base model."""

    target: str
    run_dir: Path | None = None
    config: RunConfig | None = None
    base: str | None = None
    default_spec: str = rundir.FINAL

    @property
    def trust_remote_code(self) -> bool:
        return bool(self.config and self.config.model.trust_remote_code)


@dataclass
class EvalModel:
    """A model to evaluate: ``kind`` is base | full | adapter | checkpoint."""

    name: str
    kind: str
    path: str
    adapter: str | None = None
    checkpoint: str | None = None


def resolve_target(target: str) -> RunContext:
    """Interpret ``CONFIG_OR_RUN``: a YAML config, a run directory or a model/adapter folder."""
    p = Path(target)
    if p.is_file() and p.suffix in (".yaml", ".yml"):
        cfg = load_config(p)
        return RunContext(target, Path(cfg.output_dir), cfg, cfg.model.path)
    if rundir.is_run_dir(p):
        cfg = load_config(rundir.RunDir(p).resolved_config)
        return RunContext(target, p, cfg, cfg.model.path)
    if p.is_dir():
        base, adapter = resolve_model_ref(target)
        return RunContext(target, None, None, base if adapter else None, default_spec=target)
    raise ConfigError(
        f"eval target not found: {target} (expected a run config .yaml, a run directory or a model folder)"
    )


def _checkpoint_dir(ctx: RunContext, spec: str) -> Path:
    if ctx.run_dir is None:
        raise ConfigError(f"model '{spec}' names a checkpoint, but {ctx.target} is not a run")
    run = rundir.RunDir(ctx.run_dir)
    root = run.checkpoints
    if spec == "latest":
        found = ckpt.latest_good_checkpoint(root)  # a damaged newest one is skipped, with a warning
        if found is None:
            raise ConfigError(f"no complete checkpoint in {root}")
        return found
    step = int(re.fullmatch(r"(?:step|checkpoint)-(\d+)", spec).group(1))
    path = run.checkpoint(step)
    if not (path / rundir.MARKER).is_file():
        have = ", ".join(d.name for d in ckpt.list_checkpoints(root)) or "none"
        raise ConfigError(f"no complete checkpoint {path} (complete checkpoints: {have})")
    damage = ckpt.verify_checkpoint(path)
    if damage is not None:
        raise CheckpointError(f"checkpoint {path} is damaged: {damage}")
    return path


def resolve_spec(spec: str, ctx: RunContext) -> EvalModel:
    """Turn one model spec (see the module docstring) into an :class:`EvalModel`."""
    if spec == "base":
        if not ctx.base:
            raise ConfigError(
                f"'base' is unknown for {ctx.target}: it is not a run or an adapter; "
                "compare with a model folder instead"
            )
        return EvalModel("base", "base", ctx.base)
    if spec == rundir.FINAL:
        if ctx.run_dir is None:
            raise ConfigError(f"'{rundir.FINAL}' needs a run; {ctx.target} is a model folder")
        final = rundir.RunDir(ctx.run_dir).final
        if not final.is_dir():
            raise ConfigError(
                f"{final} does not exist: the run has not finished (evaluate a "
                "checkpoint with --model latest or step-N)"
            )
        return _folder_model(rundir.FINAL, final)
    if spec == "latest" or re.fullmatch(r"(?:step|checkpoint)-\d+", spec):
        path = _checkpoint_dir(ctx, spec)
        return EvalModel(path.name, "checkpoint", ctx.base, checkpoint=str(path))
    p = Path(spec)
    if (p / rundir.MARKER).is_file() and (p / "trainable.safetensors").is_file():
        if ctx.config is None:
            raise ConfigError(f"checkpoint {spec} needs its run: pass the run directory as the target")
        return EvalModel(p.name, "checkpoint", ctx.base, checkpoint=str(p))
    if not p.is_dir():
        raise ConfigError(f"model '{spec}' is not base, final, latest, step-N or an existing folder")
    return _folder_model(spec, p)


def _folder_model(name: str, p: Path) -> EvalModel:
    base, adapter = resolve_model_ref(str(p))
    if adapter:
        return EvalModel(name, "adapter", base, adapter=adapter)
    return EvalModel(name, "full", base)


def eval_tokenizer_source(ctx: RunContext, first: EvalModel) -> tuple[str, str | None]:
    """Where the tokenizer every model of the evaluation shares comes from, as (folder or
    model path, chat-template file or None): the one saved with the run's result (it carries
    the training chat template), else the run config's, else the model folder's."""
    candidates = []
    if ctx.run_dir is not None:
        candidates.append(rundir.RunDir(ctx.run_dir).final)
    if first.adapter:
        candidates.append(Path(first.adapter))
    for c in candidates:
        if (c / "tokenizer_config.json").is_file():
            return str(c), None
    if ctx.config is not None:
        return ctx.config.model.tokenizer or ctx.config.model.path, ctx.config.model.chat_template
    return first.path, None


def load_eval_tokenizer(ctx: RunContext, first: EvalModel):
    """The tokenizer of :func:`eval_tokenizer_source`, loaded."""
    return load_tokenizer(*eval_tokenizer_source(ctx, first))


def load_eval_model(
    model: EvalModel, ctx: RunContext, device: torch.device, dtype: torch.dtype = torch.float32
):
    """The model in eval mode without gradients, attending with tunesmith's varlen attention
    (exact per-example attention in packed likelihood batches; generation falls back to SDPA).

    An adapter (or an adapter checkpoint) is merged into the full-precision base in memory: the
    same function (merge == adapter is an invariant test), without the adapter's extra small
    matmuls in every projection — measured on SmolLM2-135M, generation is markedly faster."""
    from ..models.attention import register

    lm = load_causal_lm(model.path, dtype=dtype, device=device, trust_remote_code=ctx.trust_remote_code)
    lm.set_attn_implementation(register())
    if model.kind == "adapter":
        from ..models.adapters import open_adapter

        lm = open_adapter(lm, model.adapter)
    elif model.kind == "checkpoint":
        lm = _apply_checkpoint(lm, model, ctx)
    if hasattr(lm, "merge_and_unload"):
        lm = lm.merge_and_unload()
    lm.eval()
    for p in lm.parameters():
        p.requires_grad_(False)
    return lm


def _apply_checkpoint(lm, model: EvalModel, ctx: RunContext):
    """Base + the run's adapter settings + the checkpoint's trainable tensors (names and shapes
    checked by :func:`tunesmith.engine.checkpoint.restore_trainable`)."""
    from safetensors.torch import load_file

    from ..models.adapters import attach_adapter

    cfg, where = ctx.config, Path(model.checkpoint)
    state = json.loads((where / "state.json").read_text(encoding="utf-8"))
    if cfg.method not in ("sft", "pretrain"):
        raise ModelError(
            f"cannot evaluate checkpoint {where}: only sft / pretrain checkpoints "
            f"are causal LMs to evaluate (this run is {cfg.method})"
        )
    if state.get("adapter", cfg.adapter.type) != cfg.adapter.type:
        raise ModelError(
            f"checkpoint {where} was written with adapter {state.get('adapter')!r} "
            f"but the run config says {cfg.adapter.type!r}"
        )
    lm = attach_adapter(lm, cfg.adapter)
    try:
        tensors = load_file(where / "trainable.safetensors")
    except Exception as exc:
        raise ModelError(f"checkpoint {where} is unreadable: {exc}") from None
    ckpt.restore_trainable(lm, tensors, where)
    return lm
