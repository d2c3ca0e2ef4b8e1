"""``tunesmith.train(config)``: set up a run from a config and drive the engine."""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from . import rundir
from .config import RunConfig, dump_config, load_config
from .config.auto import auto_values
from .config.resolve import RunFacts, resolve
from .engine import checkpoint as ckpt
from .engine import distributed
from .engine.distributed import DistContext, init_distributed
from .engine.loop import Trainer, TrainResult
from .engine.runtime import seed_everything
from .engine.trackers import Trackers, open_trackers
from .models import memory
from .models.device import resolve_device, resolve_dtype
from .quiet import quiet_third_party

log = logging.getLogger("tunesmith")


def setup_logging(out_dir: Path | None = None, main: bool = True) -> None:
    """Log to stderr (once) and, when given, to ``out_dir/train.log``. Ranks other than 0 of a
    multi-process run (``main=False``) log errors only (rank 0 reports for all), and no file."""
    log.setLevel(logging.INFO if main else logging.ERROR)
    if not any(getattr(h, "_tunesmith_console", False) for h in log.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        h._tunesmith_console = True
        log.addHandler(h)
    for h in list(log.handlers):
        if getattr(h, "_tunesmith_file", False):
            log.removeHandler(h)
            h.close()
    if out_dir is not None and main:
        fh = logging.FileHandler(out_dir / "train.log", encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        fh._tunesmith_file = True
        log.addHandler(fh)


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("tunesmith", "torch", "transformers", "peft", "tokenizers", "safetensors"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


@dataclass
class PreparedRun:
    """Everything a run needs, set up but not yet trained (tests drive ``trainer`` directly).
    ``cfg`` is the resolved config (:func:`tunesmith.config.resolve.resolve`)."""

    cfg: RunConfig
    model: torch.nn.Module
    tokenizer: object
    trainer: Trainer
    out: Path
    info: dict
    memory_line: str = ""
    """The memory estimate for the training log (with the heap policy the run applied)."""
    complete: Path | None = None
    """``out`` already holds this run, complete (same config, nothing left to train): its newest
    checkpoint, which verifies; the record and result were left as they are, and :func:`train`
    reports them without training. None for a run that trains."""


@dataclass
class Runtime:
    """Where a run trains: its folder, device (``cuda:LOCAL_RANK`` under torchrun), precision
    name and process group."""

    out: Path
    device: torch.device
    dtype: str
    dist: DistContext


def start_runtime(cfg: RunConfig) -> Runtime:
    """Create the output folder, join the process group (under torchrun), start logging, set
    threads and seeds."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Under torchrun: join the process group; on CUDA each rank takes cuda:LOCAL_RANK.
    dist_ctx, device = init_distributed(cfg.train.parallel, resolve_device(cfg.train.device))
    setup_logging(out, main=dist_ctx.is_main)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    rt = Runtime(out, device, resolve_dtype(cfg.train.dtype, device), dist_ctx)
    if dist_ctx.is_main:
        for warning in ignored_option_warnings(cfg, rt):
            log.warning("%s", warning)
    return rt


def ignored_option_warnings(cfg: RunConfig, rt: Runtime) -> list[str]:
    """What the config asks for that this process will not do, or will do very slowly, each
    naming the option: multi-process parallelism without torchrun, half precision on a CPU."""
    t = cfg.train
    out = []
    if t.parallel != "none" and not rt.dist.active:
        what = "train.parallel: " + t.parallel + (" with train.cpu_offload" if t.cpu_offload else "")
        effect = "no sharding, no offload" if t.parallel == "fsdp" else "no replicas"
        out.append(
            f"{what} has no effect in a single process ({effect}): this run trains on one "
            "process. Start it with `tunesmith train CONFIG --nproc N` (torchrun; docs/distributed.md)"
        )
    if rt.device.type == "cpu" and rt.dtype in ("fp16", "bf16"):
        from .models.device import cpu_has_amx_bf16

        if rt.dtype == "fp16" or not cpu_has_amx_bf16():
            out.append(
                f"train.dtype: {rt.dtype} on a CPU: CPUs without AMX compute half-precision "
                "matmuls many times slower than fp32 (SmolLM2-135M LoRA training on one AMD EPYC "
                "thread: 50 tokens/s in fp32, 3 in bf16 or fp16, about 17x slower; on a Xeon "
                "with AMX-BF16 fp16 ran no faster than fp32). Use train.dtype: fp32 (auto picks "
                'it on CPU), or bf16 on a CPU with AMX-BF16 (docs/training.md, "bf16 on a CPU")'
            )
    return out


def prepare(
    config: RunConfig | dict | str | Path, overrides: list[str] | None = None, *, resume: bool | str = "auto"
) -> PreparedRun:
    """Load config, tokenizer, data and model; build the trainer; write the resolved config.

    The config is validated once, then resolved as the run learns the facts its derived values
    depend on (:mod:`tunesmith.config.resolve`): the device before the data, the number of
    training sequences, the model's quantisation and linear modules, the trainer's warm-up.

    A run folder's record (``config.resolved.yaml``, ``run.json``) is only written by a run that
    trains there. When ``output_dir`` holds a complete run that this one would not train further
    (``resume`` not False): with the same resolved config the record is left untouched
    (``PreparedRun.complete``); with a changed one ConfigError names the keys that differ."""
    from .methods import get_method, validate
    from .models.load import load_tokenizer

    quiet_third_party()
    cfg = load_config(config, overrides)
    validate(cfg)
    rt = start_runtime(cfg)
    # train.heap as the config decides it (models/memory.py), before anything large is allocated:
    # rendering, a reference pass and loading run under it too. apply_heap may still turn it
    # compact once the estimate is known.
    memory.set_heap(memory.static_heap(cfg.train.heap, _quantised(cfg, rt), cfg.train.gradient_checkpointing))
    facts = RunFacts(device=rt.device.type, dtype=rt.dtype)
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.path, cfg.model.chat_template)
    method = get_method(cfg.method)
    with distributed.main_first(rt.dist):  # caches written while preparing are shared
        data = method.prepare_data(resolve(cfg, facts), tokenizer)
    facts = replace(facts, n_train=len(data.train))
    chosen = auto_values(cfg.train, cfg.adapter.type, len(data.train))
    if chosen:
        log.info(
            "auto hyperparameters for %d training sequences: %s",
            len(data.train),
            ", ".join(f"{k}={v:g}" for k, v in chosen.items()),
        )
    model, facts = build_model(cfg, facts, method, rt)
    facts, memory_line = apply_heap(cfg, facts, rt)
    trainer = build_trainer(resolve(cfg, facts), model, tokenizer, data, method, rt)
    resolved = resolve(cfg, replace(facts, warmup_steps=trainer.warmup))
    info = _run_info(resolved, model, trainer, data, rt)
    done = None if resume is False else completed_record(rt.out, trainer.total_steps)
    if done is not None:
        _refuse_changed_config(rt.out, done[0], resolved, trainer.total_steps)
    elif rt.dist.is_main:
        dump_config(resolved, rundir.RunDir(rt.out).resolved_config)
        rundir.RunDir(rt.out).run_info.write_text(json.dumps(info, indent=1), encoding="utf-8")
    return PreparedRun(
        resolved, model, tokenizer, trainer, rt.out, info, memory_line, complete=done and done[1]
    )


def apply_heap(cfg: RunConfig, facts: RunFacts, rt: Runtime) -> tuple[RunFacts, str]:
    """Decide and apply ``train.heap`` for training (:func:`tunesmith.models.memory.choose_heap`):
    ``auto`` compares the run's estimated peak under the fast heap with the memory available.
    Returns ``facts`` with the policy and the estimate's log line (the estimate is advisory: if it
    fails, the line says why and ``auto`` decides without it)."""
    quantised = _quantised(cfg, rt)
    try:
        est = memory.estimate_memory(resolve(cfg, facts), device=rt.device)
    except Exception as exc:  # noqa: BLE001 - any failure only loses the estimate
        est, line = None, f"memory estimate unavailable: {exc}"
    fast_peak = est.peak if est is not None and est.heap == "fast" else None
    heap, why = memory.choose_heap(
        cfg.train.heap, quantised, cfg.train.gradient_checkpointing, fast_peak, memory.available_memory()
    )
    if est is not None:
        if heap != est.heap:
            est = replace(est, heap=heap, heap_slack=0 if heap == "compact" else est.heap_slack)
        line = est.summary()
    if memory.set_heap(heap):
        log.info("heap: %s (%s)", heap, why)
    elif memory.operator_heap():
        log.info("heap: glibc's mmap threshold from the environment (train.heap %s not applied)", heap)
    return replace(facts, heap=heap), line


def _quantised(cfg: RunConfig, rt: Runtime) -> bool:
    from .models.quantize import quant_spec

    return quant_spec(cfg.model, cfg.adapter.type, rt.device) is not None


# Keys that change how a run is carried out, not what it learns or what its record says it
# learned from: rerunning a complete run may change them.
_HOW_IT_RUNS = {
    "train.threads",
    "train.heap",
    "train.progress",
    "train.profile_steps",
    "train.log_every",
    # where metrics are reported, not what is trained
    "train.report_to",
    "train.report_project",
    "train.tensorboard",
}


def completed_record(out: Path, total_steps: int) -> tuple[dict, Path] | None:
    """(recorded resolved config, newest checkpoint) of the complete run in ``out`` when a run of
    ``total_steps`` steps would train no further there: ``run.json`` holds the run's result,
    ``final/`` is there, and the newest committed checkpoint is at or past ``total_steps`` and
    verifies. None otherwise — nothing there, an unfinished run, one this run extends, or one
    whose result must be trained again (its newest checkpoint damaged, ``final/`` gone): those
    resume as before."""
    import yaml

    run = rundir.RunDir(out)
    try:
        if "result" not in run.read_run_info():
            return None
        recorded = run.read_resolved_config()
    except (OSError, ValueError, yaml.YAMLError):
        return None
    committed = [
        d
        for d in run.checkpoints.glob(rundir.CHECKPOINT_GLOB)
        if (d / rundir.MARKER).is_file() and rundir.step_of(d) is not None
    ]
    if not committed or not any(run.final.glob("*.safetensors")):
        return None
    newest = max(committed, key=rundir.step_of)
    if rundir.step_of(newest) < total_steps or ckpt.verify_checkpoint(newest) is not None:
        return None
    return recorded, newest


def config_changes(recorded: dict, resolved: RunConfig) -> list[str]:
    """``key: old -> new`` for each dotted key whose value differs between a recorded resolved
    config and ``resolved`` (compared as YAML data, so as the record stores them). A key the
    record lacks (added to tunesmith since) counts only when set to other than its default; a
    key this version no longer has is no difference it could act on."""
    import yaml

    from .config import config_to_dict

    def flat(config: RunConfig) -> dict:
        return _flatten(yaml.safe_load(yaml.safe_dump(config_to_dict(config), sort_keys=False)))

    old_flat, new_flat, defaults = _flatten(recorded), flat(resolved), flat(RunConfig())
    changes = []
    for key, after in new_flat.items():
        before = old_flat.get(key, defaults.get(key))
        if key not in _HOW_IT_RUNS and before != after:
            changes.append(f"{key}: {before!r} -> {after!r}")
    return changes


def _flatten(node: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _refuse_changed_config(out: Path, recorded: dict, resolved: RunConfig, total_steps: int) -> None:
    from .errors import ConfigError

    changes = config_changes(recorded, resolved)
    if changes:
        shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
        raise ConfigError(
            f"{out} holds a complete run ({total_steps} steps) trained with another config ({shown}). "
            f"Its record and result stay as they are: to train with this config use a new output_dir "
            f"(e.g. --set output_dir={out}-2), or --no-resume to retrain {out} from scratch"
        )


def build_model(cfg: RunConfig, facts: RunFacts, method, rt: Runtime) -> tuple[torch.nn.Module, RunFacts]:
    """The model to train: loaded (quantised when asked; the method's own loader if it has one),
    with tunesmith's attention, gradient checkpointing and the adapter attached. Returns it with
    ``facts`` plus what loading it measured (quantisation, linear modules)."""
    from .models.adapters import attach_adapter, linear_module_names
    from .models.attention import register as register_attention
    from .models.device import frozen_base_dtype, keep_fp32_outside_linears
    from .models.load import load_causal_lm
    from .models.quantize import dtype_name, prepare_for_training, quant_spec
    from .models.varlen_kernels import kernel_for

    # FSDP loads on the CPU and fully_shard moves each rank's shards to its GPU, so no GPU ever
    # holds the whole model.
    load_device = torch.device("cpu") if rt.dist.mode == "fsdp" and rt.dist.active else rt.device
    quant = quant_spec(cfg.model, cfg.adapter.type, rt.device)
    if hasattr(method, "load_model"):  # its own model class (reward: a scalar head); never quantised
        model = method.load_model(resolve(cfg, facts), load_device)
    else:
        base_dtype = frozen_base_dtype(cfg.adapter.type, rt.dtype, quant is not None)
        model = load_causal_lm(
            cfg.model.path,
            dtype=base_dtype,
            device=load_device,
            trust_remote_code=cfg.model.trust_remote_code,
            quantization=quant,
        )
        if base_dtype != torch.float32:
            keep_fp32_outside_linears(model)
            log.info("frozen base linear weights stored in %s (autocast computes in it)", rt.dtype)
        if quant is not None:
            log.info(
                "base model quantised: %d linear layers, %s", prepare_for_training(model), quant.describe()
            )
            facts = replace(facts, quant_bits=quant.bits, quant_compute_dtype=dtype_name(quant.compute_dtype))
    if cfg.model.attn_implementation == "auto":
        model.set_attn_implementation(register_attention(kernel=cfg.model.attention_kernel))
        log.info(
            "packed attention kernel on %s: %s (model.attention_kernel: %s)",
            rt.device.type,
            kernel_for(rt.device, half=rt.dtype in ("bf16", "fp16")),
            cfg.model.attention_kernel,
        )
    elif cfg.model.attn_implementation != "sdpa":
        model.set_attn_implementation(cfg.model.attn_implementation)
    if cfg.train.gradient_checkpointing:
        # transformers 5 renamed the method (and its argument); 4.x only has the old name.
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    if cfg.adapter.type != "none":
        facts = replace(facts, linear_modules=tuple(linear_module_names(model)))
    return attach_adapter(model, resolve(cfg, facts).adapter), facts


def build_trainer(cfg: RunConfig, model, tokenizer, data, method, rt: Runtime) -> Trainer:
    """The engine's trainer for ``cfg`` (resolved up to the warm-up) over the prepared data,
    with the method's loss, and generation eval when asked."""
    from .data.sources import data_fingerprint

    state_extra = {
        "data_fingerprint": data_fingerprint(cfg.data),
        "batch_size": cfg.train.batch_size,
        # micro-batches per optimizer step over all processes: resuming on another
        # world size is exact when this (so the global batch) is unchanged
        "grad_accum": cfg.train.grad_accum * rt.dist.world_size,
        "packing": cfg.train.packing,
        "max_length": cfg.train.max_length,
        "seed": cfg.train.seed,
        "method": cfg.method,
        "adapter": cfg.adapter.type,
    }
    trainer = Trainer(
        model=model,
        parts=method.build(cfg, model, tokenizer),
        items=data.train,
        units=data.train_units,
        eval_items=data.eval,
        eval_units=data.eval_units,
        cfg=cfg.train,
        out_dir=rt.out,
        device=rt.device,
        dtype=rt.dtype,
        state_extra=state_extra,
        dist=rt.dist,
    )
    if cfg.train.eval_generate:
        from .eval.training import attach_generation_eval

        attach_generation_eval(trainer, cfg, tokenizer, rt.out)
    return trainer


def _run_info(cfg: RunConfig, model, trainer: Trainer, data, rt: Runtime) -> dict:
    """``run.json``'s first version: versions, data, parameters, steps, device (and, for a GGUF
    base, its source; under torchrun, the process group)."""
    from .models.adapters import parameter_counts
    from .models.gguf_import import model_source

    trainable, total = parameter_counts(model)
    info = {
        "versions": _versions(),
        "data_fingerprint": trainer.state_extra["data_fingerprint"],
        "parameters": {"trainable": trainable, "total": total},
        "data": data.stats,
        "total_steps": trainer.total_steps,
        "device": str(rt.device),
        "dtype": rt.dtype,
    }
    source = model_source(cfg.model.path)
    if source is not None:  # trained from a GGUF file: which one, and what its weights really are
        info["model_source"] = asdict(source)
    if rt.dist.active:
        info["distributed"] = {
            "mode": rt.dist.mode,
            "world_size": rt.dist.world_size,
            "global_batch": cfg.train.batch_size * trainer.micro_per_step,
        }
    return info


def train(
    config: RunConfig | dict | str | Path,
    overrides: list[str] | None = None,
    *,
    resume: bool | str = "auto",
    process_start: float | None = None,
) -> TrainResult:
    """Fine-tune as described by ``config`` (a RunConfig, mapping or YAML path).

    ``resume``: ``"auto"`` continues from the newest complete checkpoint in ``output_dir`` if
    there is one; ``True`` requires one; ``False`` starts from scratch (old checkpoints are kept
    until rotated). Returns a :class:`TrainResult`; the run directory holds everything else.
    """
    t_start = process_start or time.time()
    run = prepare(config, overrides, resume=resume)
    if run.complete:
        return _already_complete(run)
    cfg, out, trainer, run_info = run.cfg, run.out, run.trainer, run.info
    trainable, total = run_info["parameters"]["trainable"], run_info["parameters"]["total"]
    dtype, device, data_stats = run_info["dtype"], run_info["device"], run_info["data"]
    log.info(
        "model %s: %s trainable of %s parameters (%.2f%%), %s on %s",
        cfg.model.path,
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / total,
        dtype,
        device,
    )
    if "model_source" in run_info:
        from .models.gguf_import import GGUFSource

        log.info("%s", GGUFSource(**run_info["model_source"]).describe())
    log.info("%s", run.memory_line)
    s = data_stats
    log.info(
        "data: %d train sequences in %d rows (%d tokens, %d trained), %d eval sequences; %d steps",
        s["train_sequences"],
        s["train_rows"],
        s["train"]["tokens"],
        s["train"]["target_tokens"],
        s["eval_sequences"],
        trainer.total_steps,
    )

    resume_from = None
    if resume:
        # The newest checkpoint that verifies and loads; damaged newer ones are skipped with a
        # warning naming the bad file (engine.checkpoint).
        resume_from = ckpt.load_newest_good(rundir.RunDir(out).checkpoints)
        if resume is True and resume_from is None:
            raise ckpt.CheckpointError(
                f"--resume: no complete checkpoint in {rundir.RunDir(out).checkpoints}"
            )
    distributed.same_on_all_ranks(
        trainer.dist, str(resume_from and resume_from.path), "the checkpoint to resume from"
    )
    # train.report_to: rank 0 reports; the trackers outlive fit() to store the report and final/
    trackers = (
        open_trackers(cfg, out, int(resume_from.data["state"]["step"]) if resume_from else None)
        if trainer.dist.is_main
        else Trackers()
    )
    trainer.trackers = trackers
    try:
        result = _fit_and_save(run, resume_from, t_start, trackers)
    except BaseException:
        trackers.finish(ok=False)
        raise
    trackers.finish(ok=True)
    log.info(
        "done: final loss %.4f%s; result in %s",
        result.final_loss or float("nan"),
        f", eval loss {result.eval_loss:.4f}" if result.eval_loss is not None else "",
        rundir.RunDir(out).final,
    )
    return result


def _fit_and_save(run: PreparedRun, resume_from, t_start: float, trackers: Trackers) -> TrainResult:
    """Train, save ``final/`` and write the run report; store both with ``trackers``."""
    cfg, out, trainer, model, run_info = run.cfg, run.out, run.trainer, run.model, run.info
    result = trainer.fit(resume_from, process_start=t_start)
    dist_ctx = trainer.dist
    weights = None
    if dist_ctx.mode == "fsdp" and dist_ctx.active:
        # FSDP holds shards: gather the tensors to save (collective; rank 0 keeps them).
        from .models.adapters import trainable_state_dict

        weights = distributed.gather_full(
            dist_ctx, model.state_dict() if cfg.adapter.type == "none" else trainable_state_dict(model)
        )
    if dist_ctx.is_main:
        save_final(model, run.tokenizer, rundir.RunDir(out).final, cfg, state_dict=weights)
        run_info["result"] = {k: v for k, v in asdict(result).items() if k != "history"}
        rundir.RunDir(out).run_info.write_text(json.dumps(run_info, indent=1), encoding="utf-8")
    distributed.shutdown(dist_ctx)
    from .eval.training import write_run_report

    report = write_run_report(out, trainer)
    trackers.artifact(report, "report")
    trackers.artifact(rundir.RunDir(out).final, "model")
    return result


def _already_complete(run: PreparedRun) -> TrainResult:
    """The result of the complete run in ``run.out``, read from its record; nothing is written."""
    from .eval.training import write_run_report

    folder = rundir.RunDir(run.out)
    result = folder.read_run_info().get("result") or {}
    steps = run.trainer.total_steps
    log.info(
        "training was already complete at step %d (checkpoint %s) with this config; %s and its "
        "record are left as they are",
        steps,
        run.complete,
        folder.final,
    )
    if not (run.out / "report.json").is_file():  # the one output written after the record
        write_run_report(run.out, run.trainer)
    distributed.shutdown(run.trainer.dist)
    return TrainResult(
        steps,
        result.get("final_loss"),
        result.get("eval_loss"),
        [r for r in folder.read_metrics(skip_bad=True) if r.get("step", 0) <= steps],
    )


def save_final(model, tokenizer, path: Path, cfg: RunConfig, state_dict: dict | None = None) -> None:
    """Write the adapter (PEFT format) or full weights (safetensors) plus tokenizer and template.

    ``state_dict``: the tensors to write instead of the model's own (gathered FSDP shards)."""
    from .models.adapters import unwrap
    from .models.template import stop_token_ids

    path.mkdir(parents=True, exist_ok=True)
    hf = unwrap(model)
    hf.config.use_cache = True
    if hasattr(hf, "set_attn_implementation"):
        hf.set_attn_implementation("sdpa" if getattr(hf, "_supports_sdpa", True) else "eager")
    extra = {} if state_dict is None else {"state_dict": state_dict}
    if getattr(model, "peft_config", None) and not any("embed" in t for t in _adapter_modules(cfg)):
        # tunesmith never resizes the vocabulary; "auto" would look for the base's config.json
        # (absent when the base is a GGUF file) and then ask the Hub
        extra["save_embedding_layers"] = False
    if getattr(model, "peft_config", None) and len(model.peft_config) > 1:
        extra["selected_adapters"] = [model.active_adapter]  # not a frozen reference adapter
    model.save_pretrained(path, safe_serialization=True, **extra)
    tokenizer.save_pretrained(path)
    gen = getattr(hf, "generation_config", None)
    if cfg.adapter.type == "none" and gen is not None:
        gen.eos_token_id = stop_token_ids(tokenizer)
        gen.save_pretrained(path)


def _adapter_modules(cfg: RunConfig) -> list[str]:
    targets = cfg.adapter.targets
    return ([targets] if isinstance(targets, str) else list(targets)) + list(cfg.adapter.modules_to_save)
