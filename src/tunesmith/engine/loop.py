"""The training loop, written once for every method.

A method hands the engine a ``loss_fn(model, batch) -> (loss_sum, metrics)`` that returns the
*sum* of its per-token losses and ``metrics["n"]``, the number of tokens (or items) summed.
Per principle 3 the engine sums over the accumulation window and divides by the window's total
count (known before the first backward, because the window's batches are built up front), so
``batch 8 × accum 1`` and ``batch 1 × accum 8`` give the same gradient.

The data stream is a pure function of the step: micro-batch ``g`` of the run is micro-batch
``g mod n`` of epoch ``g div n`` (see :func:`tunesmith.data.pack.micro_batches`), so resuming
needs only the step number — plus weights, optimizer, scheduler and RNG states.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import rundir
from ..config import TrainConfig
from ..config.registry import METHODS
from ..data.pack import micro_batches
from ..errors import ConfigError
from ..models.adapters import trainable_state_dict
from ..models.forward import profile_scope
from . import checkpoint as ckpt
from . import distributed
from .distributed import DistContext
from .metrics import MetricsFile, Progress
from .optimizers import make_optimizer
from .parts import MethodParts
from .profile import StepProfiler, format_report
from .runtime import autocast
from .schedule import lr_multiplier
from .selection import Selection

log = logging.getLogger("tunesmith")


@dataclass
class TrainResult:
    steps: int
    final_loss: float | None
    eval_loss: float | None
    history: list[dict] = field(default_factory=list)
    resumed_from: int | None = None
    first_step_s: float | None = None
    stopped_early_at: int | None = None
    """The step where ``train.early_stopping`` ended training (None: it ran to the end)."""
    best_step: int | None = None
    """The evaluation with the lowest eval loss (``train.early_stopping`` / ``keep_best``)."""
    best_eval_loss: float | None = None
    final_from_step: int | None = None
    """``train.keep_best``: the checkpoint whose weights the model holds after training."""


class Trainer:
    """Runs optimizer steps over pre-rendered units of examples.

    Args:
        model: the trainable module (PEFT-wrapped or full).
        parts: the method's loss function, collation and normaliser (see methods.common).
        units: train units (lists of items a micro-batch slot holds; see data.pack).
        items: the rendered items the units index into; ``parts.collate(items) -> batch``.
        eval_units / eval_items: held-out data (may be empty).
        state_extra: JSON-able facts saved in each checkpoint and checked on resume.
        dist: this process's place in the job (see engine.distributed; default: a single
            process, world size 1); with several ranks the model is wrapped for DDP / FSDP
            here, before the optimizer is built.
    """

    def __init__(
        self,
        *,
        model,
        parts: MethodParts,
        items: list,
        units: list[list[int]],
        eval_items: list,
        eval_units: list[list[int]],
        cfg: TrainConfig,
        out_dir: Path,
        device: torch.device,
        dtype: str,
        state_extra: dict,
        dist: DistContext | None = None,
    ):
        self.model, self.parts = model, parts
        self.collate = parts.collate
        self.batch_tokens, self.item_tokens = parts.batch_count, parts.item_tokens
        self.items, self.units = items, units
        self.eval_items, self.eval_units = eval_items, eval_units
        self.cfg, self.out_dir, self.device, self.dtype = cfg, out_dir, device, dtype
        self.state_extra = state_extra
        self.dist = dist or DistContext()
        # The loss computation as one module, wrapped for DDP / FSDP when there are several
        # ranks; FSDP turns the model's parameters into sharded DTensors, so this precedes
        # building the optimizer.
        self.runner = distributed.wrap(model, parts.loss_fn, self.dist, device, dtype, cfg.cpu_offload)
        distributed.seed_rank(self.dist, cfg.seed)
        # Micro-batches consumed per optimizer step, over all ranks (the global batch / batch_size).
        self.micro_per_step = cfg.grad_accum * self.dist.world_size
        self.n_micro = math.ceil(len(units) / cfg.batch_size)
        # Optimizer steps per data window (GRPO's μ); the window of step s is that of data step
        # s // batch_reuse. The value is checked on resume, so a checkpoint of another μ is refused.
        self.batch_reuse = parts.batch_reuse
        if self.batch_reuse != 1:
            self.state_extra = {**self.state_extra, "batch_reuse": self.batch_reuse}
        # Early stopping / best checkpoint (engine.selection); their settings are checked on
        # resume only when on, so checkpoints of runs without them still resume.
        es = cfg.early_stopping
        self.selection = Selection(es.patience if es else None, es.min_delta if es else 0.0)
        self.tracks_best = es is not None or cfg.keep_best
        if self.tracks_best:
            if not eval_units:
                raise ConfigError(
                    "config: 'train.early_stopping' / 'keep_best' compare eval losses, but the "
                    "run has no held-out example (set data.eval, or data.eval_fraction > 0 "
                    "with at least 2 training examples)"
                )
            self.state_extra = {
                **self.state_extra,
                "selection": {
                    "early_stopping": es and [es.patience, es.min_delta],
                    "keep_best": cfg.keep_best,
                },
            }
        if cfg.max_steps is not None:
            self.total_steps = cfg.max_steps
        else:
            self.total_steps = (
                max(1, math.ceil(cfg.epochs * self.n_micro / self.micro_per_step)) * self.batch_reuse
            )
        self.warmup = (
            cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_ratio * self.total_steps)
        )
        params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        self.params = params
        self.optimizer = make_optimizer([g for g in groups if g["params"]], cfg, device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_multiplier(
                s, total=self.total_steps, warmup=self.warmup, kind=cfg.scheduler, min_ratio=cfg.min_lr_ratio
            ),
        )
        self._epoch_cache: dict[int, list[list[int]]] = {}
        # train.report_to: the experiment trackers every metrics row also goes to (rank 0 only;
        # opened and closed by the caller, see tunesmith.run.train and engine/trackers.py)
        self.trackers = None
        # (model, step) -> extra eval metrics, e.g. generation metrics (tunesmith.eval.training)
        self.eval_hook: Callable | None = None
        # train.profile_steps: where steps 2 .. 1 + N spend their time (engine/profile.py)
        self.profiler = (
            StepProfiler(model, cfg.profile_steps, rundir.RunDir(out_dir).profile)
            if cfg.profile_steps and self.dist.is_main
            else None
        )

    # -- data stream ------------------------------------------------------------------------
    def _micro_batch(self, g: int) -> list[int]:
        epoch, k = divmod(g, self.n_micro)
        if epoch not in self._epoch_cache:
            self._epoch_cache = {epoch: micro_batches(self.units, self.cfg.batch_size, self.cfg.seed, epoch)}
        return self._epoch_cache[epoch][k]

    def window(self, step: int) -> list:
        """Collated forward passes of optimizer step ``step`` (0-based) on this rank: its
        ``grad_accum`` micro-batches, each split at example boundaries into passes of at most
        ``max_tokens_per_forward`` tokens. With several ranks, rank ``r`` takes its share of
        the step's micro-batches (:func:`tunesmith.engine.distributed.rank_micro_batches`).
        With ``parts.batch_reuse = μ`` steps ``kμ .. kμ + μ − 1`` all get data step ``k``'s window."""
        ga = self.cfg.grad_accum
        return [
            b
            for g in distributed.rank_micro_batches(step // self.batch_reuse, ga, self.dist)
            for b in self._passes([self.items[i] for i in self._micro_batch(g)])
        ]

    def _passes(self, items: list) -> list:
        """One micro-batch's items collated into passes of at most ``max_tokens_per_forward``."""
        return [
            self.collate(part)
            for part in split_by_tokens(items, self.cfg.max_tokens_per_forward, self.item_tokens)
        ]

    # -- one step ---------------------------------------------------------------------------
    def accumulate(self, step: int) -> dict:
        """Forward + backward over the window of ``step``; gradients are left in ``.grad``.

        Returns the summed loss, the normaliser ``n``, the tokens processed and the summed
        method metrics (``sums``), over all ranks (see engine.distributed for the maths; a single
        process is one rank). The window's count is summed over ranks before the first backward;
        each rank divides its loss by ``n_global / world_size`` because DDP / FSDP average
        gradients. Under FSDP every rank runs the same number of passes (its all-gathers are
        collectives): a rank with fewer passes repeats its last one with zero weight."""
        ctx = self.dist
        self.runner.train()
        with profile_scope("data"):
            batches = [b.to(self.device) for b in self.window(step)]
        n_total, most = distributed.window_totals(
            ctx, self.device, sum(self.batch_tokens(b) for b in batches), len(batches)
        )
        passes = most if ctx.mode == "fsdp" else len(batches)
        # Normalise by the whole window's count (principle 3).
        per_rank = max(n_total, 1) / ctx.world_size
        loss_sum, tokens, sums = 0.0, 0, {}
        for i in range(passes):
            real = i < len(batches)
            batch = batches[min(i, len(batches) - 1)]
            with distributed.no_grad_sync(self.runner, ctx, sync=i == passes - 1):
                with autocast(self.device, self.dtype):
                    loss, metrics = self.runner(batch)
                (loss / per_rank if real else loss * 0.0).backward()
            if real:
                loss_sum += float(loss.detach())
                _add_metrics(sums, metrics)
                tokens += int(batch.n_tokens)
        (loss_sum, tokens), sums = distributed.sum_over_ranks(ctx, self.device, [loss_sum, tokens], sums)
        return {"loss_sum": loss_sum, "n": n_total, "tokens": int(tokens), "sums": sums}

    def train_step(self, step: int) -> dict:
        t0 = time.perf_counter()
        acc = self.accumulate(step)
        loss_sum, n_total, tokens = acc["loss_sum"], acc["n"], acc["tokens"]
        grad_norm = None
        with profile_scope("optimizer"):
            if self.cfg.max_grad_norm is not None:
                # Under FSDP the norm is a DTensor reduced over the shards of every rank.
                grad_norm = float(
                    distributed.full_tensor(
                        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
                    )
                )
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        epoch = (step + 1) * self.micro_per_step / (self.n_micro * self.batch_reuse)
        row = {
            "step": step + 1,
            "epoch": round(epoch, 4),
            "loss": loss_sum / max(n_total, 1),
            "lr": lr,
            "tokens": n_total,
            "tokens_total": tokens,
            "tokens_per_s": tokens / dt if dt > 0 else 0.0,
            **self.parts.summarize(acc["sums"], n_total),
            "step_time_s": round(dt, 4),
        }
        if grad_norm is not None:
            row["grad_norm"] = grad_norm
        return row

    @torch.no_grad()
    def evaluate(self, step: int | None = None) -> dict:
        """Loss and method metrics averaged over all held-out units, keys prefixed ``eval_``."""
        if not self.eval_units:
            return {}
        loss_sum, n, sums = self._eval_sums()
        self.model.train()
        mean = loss_sum / max(n, 1)
        out = {"eval_loss": mean}
        if self.parts.perplexity:
            out["eval_ppl"] = math.exp(min(mean, 50.0))
        out.update({f"eval_{k}": v for k, v in self.parts.summarize(sums, n).items()})
        out["eval_tokens"] = n
        if self.eval_hook is not None:
            out.update(self.eval_hook(self.model, step))
        return out

    def _eval_sums(self) -> tuple[float, int, dict]:
        """(loss sum, count, metric sums) of the held-out set over all ranks: chunks of
        ``batch_size`` units dealt round robin (a single process scores them all); under FSDP
        ranks with fewer passes run discarded ones so that every rank joins the same all-gathers."""
        ctx = self.dist
        self.runner.eval()
        bs = self.cfg.batch_size
        starts = range(0, len(self.eval_units), bs)
        chunk = lambda s: [self.eval_items[i] for unit in self.eval_units[s : s + bs] for i in unit]  # noqa: E731
        groups = [
            g
            for k in distributed.rank_share(len(starts), ctx)
            for g in split_by_tokens(chunk(starts[k]), self.cfg.max_tokens_per_forward, self.item_tokens)
        ]
        _, most = distributed.window_totals(ctx, self.device, 0, len(groups))
        passes = most if ctx.mode == "fsdp" else len(groups)
        spare = (
            groups[-1]
            if groups
            else split_by_tokens(chunk(0), self.cfg.max_tokens_per_forward, self.item_tokens)[0]
        )
        loss_sum, n, sums = 0.0, 0, {}
        for i in range(passes):
            batch = self.collate(groups[i] if i < len(groups) else spare).to(self.device)
            with autocast(self.device, self.dtype):
                loss, metrics = self.runner(batch)
            if i < len(groups):
                loss_sum += float(loss)
                _add_metrics(sums, metrics)
                n += self.batch_tokens(batch)
        (loss_sum, n), sums = distributed.sum_over_ranks(ctx, self.device, [loss_sum, n], sums)
        return loss_sum, int(n), sums

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, step: int) -> Path:
        """Gather the trainable tensors and optimizer state to full tensors (collectives under
        FSDP), then rank 0 writes the single-process checkpoint format — resumable on any
        world size — with every rank's RNG state; the barrier keeps ranks in step."""
        ctx = self.dist
        trainable = distributed.gather_full(ctx, trainable_state_dict(self.model))
        optimizer = distributed.full_optimizer_state(ctx, self.optimizer.state_dict())
        rng = distributed.gather_rng_state(ctx)
        path = rundir.RunDir(self.out_dir).checkpoint(step)
        if ctx.is_main:
            optim = {"optimizer": optimizer, "scheduler": self.scheduler.state_dict()}
            path = ckpt.save_checkpoint(
                rundir.RunDir(self.out_dir).checkpoints,
                step,
                trainable=trainable,
                optim_state=optim,
                rng=rng,
                state={"step": step, **self.state_extra, **self._selection_state()},
                keep_last=self.cfg.keep_last,
                keep=self.selection.best_step if self.cfg.keep_best else None,
            )
        distributed.barrier(ctx)
        return path

    def restore(self, path: Path, data: dict | None = None) -> int:
        """Load checkpoint ``path`` (or its already loaded ``data``) into the model, optimizer,
        scheduler and RNGs; returns its step. CheckpointError when it was written with other
        settings (``state_extra``) or for another model."""
        data = data if data is not None else ckpt.load_checkpoint(path)
        saved = data["state"]
        for key, value in self.state_extra.items():
            if saved.get(key) != value:
                what = (
                    " (micro-batches per step: train.grad_accum × processes)" if key == "grad_accum" else ""
                )
                raise ckpt.CheckpointError(
                    f"cannot resume from {path}: '{key}'{what} was {saved.get(key)!r} there but is "
                    f"{value!r} now. Use a new output_dir, or restore the original setting."
                )
        ckpt.restore_trainable(self.model, data["trainable"], path)
        optimizer = distributed.shard_optimizer_state(self.dist, data["optim"]["optimizer"], self.optimizer)
        self.optimizer.load_state_dict(optimizer)
        self.scheduler.load_state_dict(data["optim"]["scheduler"])
        distributed.restore_rank_rng(self.dist, data["rng"], self.cfg.seed, int(saved["step"]))
        if self.tracks_best:
            self.selection.restore(saved.get("eval_selection"))
        return int(saved["step"])

    def _selection_state(self) -> dict:
        return {"eval_selection": self.selection.state()} if self.tracks_best else {}

    def load_best(self) -> int | None:
        """``train.keep_best``: put the weights of the best evaluation's checkpoint into the
        model (every rank); returns its step, or None when keep_best is off or no evaluation
        ran. CheckpointError when that checkpoint is missing or damaged."""
        best = self.selection.best_step
        if not self.cfg.keep_best or best is None:
            return None
        path = rundir.RunDir(self.out_dir).checkpoint(best)
        reason = ckpt.verify_checkpoint(path) if path.is_dir() else "it is missing"
        if reason is not None:
            raise ckpt.CheckpointError(
                f"train.keep_best: cannot read the best checkpoint {path} (eval loss "
                f"{self.selection.best_loss:.4f}): {reason}"
            )
        ckpt.restore_trainable(self.model, ckpt.load_checkpoint(path)["trainable"], path)
        return best

    # -- the loop ----------------------------------------------------------------------------
    def fit(
        self, resume_from: ckpt.LoadedCheckpoint | Path | None = None, process_start: float | None = None
    ) -> TrainResult:
        """Train from step 0, or from ``resume_from``: a checkpoint directory, or one that
        :func:`tunesmith.engine.checkpoint.load_newest_good` chose and loaded."""
        cfg = self.cfg
        if isinstance(resume_from, ckpt.LoadedCheckpoint):
            start = self.restore(*resume_from)
            resume_from = resume_from.path
        else:
            start = self.restore(resume_from) if resume_from else 0
        if resume_from:
            log.info("resumed from %s at step %d", resume_from, start)
        # Only rank 0 writes metrics and shows progress (every rank computes the same rows).
        main = self.dist.is_main
        sink = (
            MetricsFile(rundir.RunDir(self.out_dir).metrics, start if resume_from else None, self.trackers)
            if main
            else _NoSink()
        )
        spec = METHODS.get(self.state_extra.get("method"))
        progress = Progress(
            self.total_steps,
            start,
            cfg.progress if main else "none",
            cfg.log_every,
            signals=spec.signals if spec else (),
        )
        eval_batches = -(-len(self.eval_units) // max(cfg.batch_size, 1))
        history, last_eval, first_step_s = [], None, None
        end = self.total_steps if self.selection.stopped_at is None else start  # stopped early: done
        if cfg.eval_at_start and start == 0 and self.eval_units:
            progress.evaluating(0, eval_batches)
            baseline = {"step": 0, **self.evaluate(0)}
            sink.write(baseline)
            history.append(baseline)
            progress.note(f"step 0: {_eval_text(baseline, progress)}")
        try:
            for step in range(start, end):
                with self.profiler.step(step + 1) if self.profiler else contextlib.nullcontext():
                    row = self.train_step(step)
                if self.profiler and self.profiler.result and not self.profiler.reported:
                    self.profiler.reported = True
                    progress.note(format_report(self.profiler.result))
                if first_step_s is None and process_start is not None:
                    first_step_s = time.time() - process_start
                done = row["step"]
                is_last = done == self.total_steps
                verdict = None
                if self.eval_units and ((cfg.eval_every and done % cfg.eval_every == 0) or is_last):
                    progress.evaluating(done, eval_batches)
                    ev = self.evaluate(done)
                    row.update(ev)
                    last_eval = ev.get("eval_loss")
                    progress.note(f"step {done}: {_eval_text(ev, progress)}")
                    if self.tracks_best:
                        verdict = self.selection.observe(done, ev["eval_loss"])
                sink.write(row)
                history.append(row)
                progress.update(row)
                stop = verdict is not None and verdict.stop
                best_now = verdict is not None and verdict.new_best and cfg.keep_best
                if (cfg.save_every and done % cfg.save_every == 0) or is_last or stop or best_now:
                    self.save(done)
                if stop and not is_last:
                    progress.note(self._stop_text(done))
                    break
        finally:
            progress.close()
            sink.close()
        if not history and (start >= self.total_steps or self.selection.stopped_at is not None):
            log.info(
                "training was already complete at step %d%s",
                start,
                " (stopped early)" if self.selection.stopped_at is not None else "",
            )
            history = [r for r in read_metrics(self.out_dir) if r.get("step", 0) <= start]
        final_from = self.load_best()
        if final_from is not None:
            log.info(
                "train.keep_best: final weights are those of step %d (eval loss %.4f)",
                final_from,
                self.selection.best_loss,
            )
        final_loss = next((r["loss"] for r in reversed(history) if "loss" in r), None)
        last_eval = (
            last_eval
            if last_eval is not None
            else next((r["eval_loss"] for r in reversed(history) if "eval_loss" in r), None)
        )
        stopped = self.selection.stopped_at
        stopped = stopped if stopped is not None and stopped < self.total_steps else None
        return TrainResult(
            stopped or self.total_steps,
            final_loss,
            last_eval,
            history,
            resumed_from=start if resume_from else None,
            first_step_s=first_step_s,
            stopped_early_at=stopped,
            best_step=self.selection.best_step,
            best_eval_loss=self.selection.best_loss,
            final_from_step=final_from,
        )

    def _stop_text(self, step: int) -> str:
        s = self.selection
        return (
            f"early stopping at step {step}: eval loss has not improved on the best by more than "
            f"{s.min_delta:g} for {s.patience} evaluations (best {s.best_loss:.4f} at step {s.best_step})"
        )


class _NoSink:
    """The metrics sink of ranks other than 0."""

    def write(self, row: dict) -> None:
        pass

    def close(self) -> None:
        pass


def _add_metrics(sums: dict, metrics: dict) -> None:
    """Add a pass's summed metrics into ``sums`` (the count ``n`` is the engine's business)."""
    for key, value in metrics.items():
        if key != "n":
            sums[key] = sums.get(key, 0.0) + float(value)


def _eval_text(ev: dict, progress: Progress) -> str:
    """``eval_loss 0.4120 (ppl 1.51) | eval_acc 0.750 …``: the loss and the method's signals."""
    text = f"eval_loss {ev['eval_loss']:.4f}" + (f" (ppl {ev['eval_ppl']:.2f})" if "eval_ppl" in ev else "")
    signals = progress.row_text({k: v for k, v in ev.items() if k != "eval_loss"}, prefix="eval_")
    return text + (f" | {signals}" if signals else "")


def split_by_tokens(items: list, max_tokens: int | None, size: Callable) -> list[list]:
    """Consecutive groups of ``items`` holding at most ``max_tokens`` tokens each (an item
    larger than that forms a group of its own); one group when ``max_tokens`` is None."""
    if not max_tokens:
        return [items]
    groups, current, used = [], [], 0
    for item in items:
        n = size(item)
        if current and used + n > max_tokens:
            groups.append(current)
            current, used = [], 0
        current.append(item)
        used += n
    if current:
        groups.append(current)
    return groups


def read_metrics(out_dir: Path) -> list[dict]:
    """The rows of ``OUT_DIR/metrics.jsonl`` (:meth:`tunesmith.rundir.RunDir.read_metrics`)."""
    return rundir.RunDir(out_dir).read_metrics()
