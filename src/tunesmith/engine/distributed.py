"""Multi-process training with ``torch.distributed``: DDP and FSDP2 under ``torchrun``.

How a run is split (``W`` processes, ranks ``0..W-1``; ``B`` = ``train.batch_size``,
``A`` = ``train.grad_accum``):

- **Data.** The single-process stream of micro-batches (:func:`tunesmith.data.pack.micro_batches`,
  a pure function of the global micro-batch index) is kept. Optimizer step ``s`` consumes the
  ``A·W`` consecutive micro-batches ``s·A·W … (s+1)·A·W − 1``; rank ``r`` takes the ``A`` of
  them starting at ``s·A·W + r·A`` (:func:`rank_micro_batches`). The global batch is
  ``B × A × W``, and ``W`` ranks with ``grad_accum A`` see exactly the micro-batches of one
  process with ``grad_accum A·W``.
- **Loss.** The window's normaliser (supervised tokens, pairs …) is all-reduced *before* the
  first backward, so every rank divides its summed loss by the global count ``N``. DDP and
  FSDP average gradients over ranks (divide by ``W``), so each rank back-propagates
  ``loss_sum · W / N``; the averaged gradient is then ``Σ_ranks loss_sum / N``, the
  single-process gradient (principle 3).
- **Models.** The method's ``loss_fn(model, batch)`` reaches into the model (decoder, LM head),
  so the unit that DDP / FSDP wrap is :class:`LossForward`, a module whose ``forward(batch)`` is
  that call: DDP's reducer and FSDP's all-gathers then see every parameter use. FSDP2 shards
  each decoder block (``fully_shard``) and, as the root group, the embeddings, final norm and
  LM head.
- **Checkpoints** are gathered into the single-process format (full trainable tensors and
  optimizer state) and written by rank 0 — so a run resumes on any world size and either
  parallel mode, provided the micro-batches per step ``A·W`` stay the same.

A single process runs the same code with ``world_size`` 1 and no process group: every
collective below then returns this process's own values, and :func:`wrap` returns the bare
:class:`LossForward`.

Backends: NCCL for CUDA tensors (plus gloo for CPU-side objects), gloo on CPU.
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError, ModelError

log = logging.getLogger("tunesmith")

PARALLEL_MODES = ("none", "ddp", "fsdp")
# A CPU (gloo) group with a long timeout for waits that are not collectives of the training
# step — rank 0 preparing data and caches first can take longer than NCCL's 10 minutes.
_SLOW_WAIT = timedelta(hours=6)
_slow_group = None


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job. ``mode`` is ``none`` for a single process."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    mode: str = "none"

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world_size() -> int:
    """Processes in this job as set by ``torchrun`` (1 when started directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(parallel: str, device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group ``torchrun`` set up; returns the context and this rank's device.

    A single process (no ``WORLD_SIZE`` > 1 in the environment) returns a context with
    ``active == False`` and ``device`` unchanged, whatever ``parallel`` says. On CUDA each
    rank takes ``cuda:LOCAL_RANK``.
    """
    world = launched_world_size()
    if world <= 1:
        return DistContext(), device
    if parallel == "none":
        raise ConfigError(
            f"config: {world} processes were launched but 'train.parallel' is 'none'; "
            "set train.parallel to ddp or fsdp (e.g. --set train.parallel=ddp)"
        )
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # CUDA tensors go over NCCL; gathered Python objects (RNG states) and CPU-offloaded
        # tensors need a CPU backend too.
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    global _slow_group
    _slow_group = dist.new_group(backend="gloo", timeout=_SLOW_WAIT)
    return DistContext(world, rank, local_rank, parallel), device


@contextmanager
def main_first(ctx: DistContext):
    """Run the block on rank 0 first, then on the other ranks: whatever rank 0 caches on disk
    (reference log-probs, teacher caches …) the others read instead of computing and writing
    the same files at the same time."""
    if ctx.active and not ctx.is_main:
        dist.barrier(group=_slow_group)
    yield
    if ctx.active and ctx.is_main:
        dist.barrier(group=_slow_group)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (after a final barrier so no rank exits mid-collective)."""
    if ctx.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        dist.barrier()


def seed_rank(ctx: DistContext, seed: int, offset: int = 0) -> None:
    """Give ranks > 0 their own dropout RNG stream (rank 0 keeps the single-process one).

    All ranks start from the same seed so that adapter initialisation is identical; after
    the model is built each rank must draw *different* dropout masks for its own data."""
    if ctx.rank > 0:
        value = (seed * 1_000_003 + offset * 1_009 + ctx.rank) % (2**63)
        random.seed(value)
        torch.manual_seed(value)


# -- data ---------------------------------------------------------------------------------------
def rank_micro_batches(step: int, grad_accum: int, ctx: DistContext) -> range:
    """Global micro-batch indices rank ``ctx.rank`` processes in optimizer step ``step``.

    >>> list(rank_micro_batches(3, 2, DistContext(world_size=2, rank=1)))
    [14, 15]
    """
    first = step * grad_accum * ctx.world_size + ctx.rank * grad_accum
    return range(first, first + grad_accum)


def rank_share(n_chunks: int, ctx: DistContext) -> range:
    """Indices of the evaluation chunks this rank scores (round robin)."""
    return range(ctx.rank, n_chunks, ctx.world_size)


# -- collectives ----------------------------------------------------------------------------------
def _reduce_device(ctx: DistContext, device: torch.device) -> torch.device:
    return device if device.type == "cuda" else torch.device("cpu")


def window_totals(ctx: DistContext, device: torch.device, count: int, passes: int) -> tuple[int, int]:
    """(Σ count over ranks, max passes over ranks) in one all-gather: the global normaliser of
    a window and the number of forward passes every rank must run (FSDP's all-gathers are
    collectives, so all ranks need the same number of forwards)."""
    if not ctx.active:
        return count, passes
    mine = torch.tensor([count, passes], dtype=torch.long, device=_reduce_device(ctx, device))
    out = [torch.zeros_like(mine) for _ in range(ctx.world_size)]
    dist.all_gather(out, mine)
    stacked = torch.stack(out)
    return int(stacked[:, 0].sum()), int(stacked[:, 1].max())


def sum_over_ranks(
    ctx: DistContext, device: torch.device, head: list[float], sums: dict
) -> tuple[list[float], dict]:
    """``head`` and every value of ``sums`` summed over ranks in one all-reduce (float64, so
    token counts stay exact). The metric names must agree across ranks."""
    if not ctx.active:
        return list(head), dict(sums)
    keys = sorted(sums)
    every = gather_objects(ctx, keys)
    if any(k != keys for k in every):
        raise RuntimeError(f"ranks report different metrics: {every}")
    t = torch.tensor(
        [float(v) for v in head] + [float(sums[k]) for k in keys],
        dtype=torch.float64,
        device=_reduce_device(ctx, device),
    )
    dist.all_reduce(t)
    values = t.tolist()
    return values[: len(head)], dict(zip(keys, values[len(head) :]))


def same_on_all_ranks(ctx: DistContext, value, what: str) -> None:
    """Raise (on every rank) unless ``value`` is the same on all ranks — e.g. the checkpoint to
    resume from, which differs when ``output_dir`` is not on a filesystem all nodes share."""
    every = gather_objects(ctx, value)
    if any(v != every[0] for v in every):
        from ..errors import CheckpointError

        raise CheckpointError(
            f"the ranks disagree on {what}: {every} (by rank). output_dir must be "
            "on a filesystem every node shares (see docs/distributed.md)"
        )


def gather_objects(ctx: DistContext, obj) -> list:
    """``obj`` of every rank, by rank (a collective)."""
    if not ctx.active:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a (possibly FSDP-sharded) tensor. Collective for DTensors: every
    rank must call it, in the same order."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``full`` laid out like ``like``: this rank's shard when ``like`` is an FSDP DTensor
    (every rank holds ``full``, so no communication), else ``full`` on ``like``'s device."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(like, DTensor):
        return full.to(like.device, like.dtype)
    return distribute_tensor(
        full.to(like.to_local().device, like.dtype), like.device_mesh, like.placements, src_data_rank=None
    )


# -- checkpoints ----------------------------------------------------------------------------------
def gather_full(ctx: DistContext, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """Full CPU copies of ``tensors`` on rank 0 (None on other ranks); collective under FSDP.
    A single process gets ``tensors`` themselves: nothing is sharded, so nothing is copied."""
    if not ctx.active:
        return tensors
    out = {}
    for name, t in tensors.items():
        whole = full_tensor(t)
        if ctx.is_main:
            # A copy with storage of its own: an unevenly sharded tensor's full_tensor() can be a
            # view into a padded buffer, which safetensors refuses to serialise.
            out[name] = whole.detach().to("cpu", copy=True)
    return out if ctx.is_main else None


def full_optimizer_state(ctx: DistContext, state_dict: dict) -> dict | None:
    """``optimizer.state_dict()`` with FSDP-sharded moments gathered (rank 0; None elsewhere):
    the single-process format, keyed by parameter index (a single process: ``state_dict``)."""
    if not ctx.active:
        return state_dict
    state = {}
    for index in sorted(state_dict["state"]):
        entry = {}
        for key, value in state_dict["state"][index].items():
            if isinstance(value, torch.Tensor):
                value = full_tensor(value).detach().to("cpu", copy=True)
            entry[key] = value
        state[index] = entry
    return {"state": state, "param_groups": state_dict["param_groups"]} if ctx.is_main else None


def shard_optimizer_state(ctx: DistContext, state_dict: dict, optimizer: torch.optim.Optimizer) -> dict:
    """A full (single-process format) optimizer state laid out like ``optimizer``'s parameters:
    per-parameter tensors of the parameter's shape become this rank's shard under FSDP."""
    if not ctx.active:
        return state_dict
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for index, entry in state_dict["state"].items():
        p = params[int(index)]
        state[index] = {
            k: shard_like(v, p) if isinstance(v, torch.Tensor) and v.shape == p.shape else v
            for k, v in entry.items()
        }
    return {"state": state, "param_groups": state_dict["param_groups"]}


def gather_rng_state(ctx: DistContext) -> dict:
    """The RNG states a checkpoint keeps: rank 0's (the single-process format), plus every
    rank's under ``"ranks"`` when there are several (a collective)."""
    from .runtime import rng_state

    states = gather_objects(ctx, rng_state())
    return {**states[0], "ranks": states} if ctx.active else states[0]


def restore_rank_rng(ctx: DistContext, saved: dict, seed: int, step: int) -> None:
    """Restore this rank's RNG state from a checkpoint written with the same world size;
    otherwise rank 0 takes the saved (rank-0 / single-process) state and other ranks draw
    fresh, seeded dropout streams (the data order never depends on RNG)."""
    from .runtime import set_rng_state

    ranks = saved.get("ranks")
    if ranks is not None and len(ranks) == ctx.world_size:
        set_rng_state(ranks[ctx.rank])
        return
    set_rng_state(saved)
    seed_rank(ctx, seed, offset=step)
    if ctx.is_main and ctx.world_size > 1:
        log.info(
            "resuming on %d processes from a checkpoint of %s: ranks > 0 start new dropout RNG streams",
            ctx.world_size,
            f"{len(ranks)} processes" if ranks else "1 process",
        )


# -- models ---------------------------------------------------------------------------------------
class LossForward(nn.Module):
    """``forward(batch) = loss_fn(model, batch)``: the module DDP / FSDP wrap.

    The methods' loss functions call into the model's parts (decoder, LM head) rather than its
    ``forward``; routing the whole call through one module's ``forward`` lets DDP prepare its
    gradient reduction and FSDP all-gather the root group (embeddings, norm, head)."""

    def __init__(self, model: nn.Module, loss_fn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


def decoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a causal LM (PEFT-wrapped or not), FSDP's sharding units."""
    from ..models.adapters import unwrap

    hf = unwrap(model)
    decoder = hf.get_decoder() if hasattr(hf, "get_decoder") else getattr(hf, "model", None)
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers):
        raise ModelError(
            f"train.parallel fsdp: cannot find the decoder blocks of {type(hf).__name__} "
            "(expected a 'layers' list in its decoder); use train.parallel ddp"
        )
    return list(layers)


def _check_fsdp_supported(model: nn.Module) -> None:
    """bitsandbytes' 4-bit weights (QLoRA) pack two values per byte with a separate quant
    state; FSDP2 shards plain tensors only, so it cannot split them."""
    for name, p in model.named_parameters():
        if type(p).__name__ in ("Params4bit", "Int8Params"):
            raise ConfigError(
                f"config: train.parallel fsdp cannot shard bitsandbytes-quantised weights "
                f"('{name}' is {type(p).__name__}): QLoRA with FSDP2 is not supported by "
                "bitsandbytes. Use train.parallel: ddp (each GPU holds the 4-bit model) or "
                "train without quantisation."
            )


def wrap(
    model: nn.Module, loss_fn, ctx: DistContext, device: torch.device, dtype: str, cpu_offload: bool = False
) -> nn.Module:
    """``LossForward(model, loss_fn)`` wrapped for ``ctx.mode`` (bare in a single process); call
    it as ``runner(batch)``.

    ``model`` keeps its identity (FSDP shards its parameters in place as DTensors), so
    ``model.named_parameters()`` is what the optimizer must be built over — after this call.
    """
    runner = LossForward(model, loss_fn)
    if not ctx.active:
        return runner
    if ctx.mode == "ddp":
        # Buffers (rotary tables) are deterministic and identical on every rank: no need to
        # broadcast them before each forward (the option was renamed in torch 2.13).
        import inspect

        from torch.nn.parallel import DistributedDataParallel as DDP

        no_sync = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(DDP).parameters
            else {"broadcast_buffers": False}
        )
        return DDP(runner, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)
    if ctx.mode != "fsdp":
        raise ConfigError(f"config: unknown train.parallel {ctx.mode!r}; expected one of {PARALLEL_MODES}")
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    _check_fsdp_supported(model)
    mesh = init_device_mesh(device.type, (ctx.world_size,))
    mp = MixedPrecisionPolicy()
    if device.type == "cuda" and dtype in ("bf16", "fp16"):
        # Compute in half precision, reduce gradients in fp32; the sharded master weights
        # (and so AdamW) stay fp32.
        mp = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16 if dtype == "bf16" else torch.float16, reduce_dtype=torch.float32
        )
    offload = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
    for block in decoder_blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=mp, offload_policy=offload)
    fully_shard(runner, mesh=mesh, mp_policy=mp, offload_policy=offload)
    return runner


def no_grad_sync(runner: nn.Module, ctx: DistContext, sync: bool):
    """DDP: skip the gradient all-reduce on all but the window's last backward (gradients
    accumulate locally). FSDP reduce-scatters every backward, keeping gradients sharded."""
    if ctx.mode == "ddp" and not sync:
        return runner.no_sync()
    return nullcontext()


# -- launching ------------------------------------------------------------------------------------
def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """The single-node ``torchrun`` command running ``tunesmith <args>`` on ``nproc`` processes.

    ``--standalone`` uses a private rendezvous on a free local port, so several jobs can share
    a machine."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "tunesmith",
        *args,
    ]


def launch_local(nproc: int, args: list[str]) -> int:
    """Run ``tunesmith <args>`` under torchrun on this machine; returns torchrun's exit status.

    torchrun watches its workers: when one dies (a crash, SIGKILL, out of memory) it stops the
    others and exits non-zero, so a failed rank never leaves the rest waiting in a collective.
    """
    env = dict(os.environ)
    # torchrun's own default; set here so it does not print a warning about it.
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.call(torchrun_command(nproc, args), env=env)
