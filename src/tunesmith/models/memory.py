"""Peak-memory estimate of a training run, before any weight is loaded.

``tunesmith estimate CONFIG`` and the first lines of ``tunesmith train`` print it. The model is
instantiated on PyTorch's ``meta`` device (shapes only, no memory), so parameter counts and
which layers are quantised are exact for any architecture transformers knows.

The peak, in bytes, is modelled as (one process, one device)::

    peak = runtime + weights + trainable + optimizer
           + max(grads_held + activations + heap_slack + max(logits, workspace),  # forward / backward
                 grads + optimizer_step)                                          # optimizer step

- **weights**: every frozen base parameter — fp32 (4 bytes), except the frozen linear weights
  of a LoRA / DoRA run under bf16 / fp16 autocast (2 bytes: ``models.device.frozen_base_dtype``),
  or for quantised linear layers the bitsandbytes storage
  (:func:`tunesmith.models.quantize.quantized_weight_bytes`: 4-bit ≈ 0.52 bytes/weight with
  double quantisation).
- **trainable**: the trainable parameters in fp32 (the LoRA / DoRA adapter; for full
  fine-tuning all parameters, which then count here and not under weights).
- **grads**: 4 bytes per trainable parameter. ``grads_held`` is the same amount when a step
  runs several forward passes (gradient accumulation, ``max_tokens_per_forward``), since the
  gradients of earlier passes are alive during later ones; 0 for a single pass.
- **optimizer**: AdamW keeps two fp32 moments (8 bytes per trainable parameter); bitsandbytes'
  8-bit AdamW two uint8 moments plus an fp32 scale per 256 (Dettmers et al. 2022, "8-bit
  Optimizers via Block-wise Quantization"), tensors under 4096 elements staying 32-bit.
  ``optimizer_step``: the temporaries of torch's AdamW step. On CUDA it runs multi-tensor
  (``foreach``): ``sqrt(v)`` for all parameters at once, 4 bytes per trainable parameter. On CPU
  torch has no foreach kernels and updates one tensor at a time; ``denom = v.sqrt() / c`` holds
  two temporaries of the largest trainable tensor. bitsandbytes updates in place.
- **activations**: the bytes autograd saves for backward in one forward pass of ``T`` tokens —
  measured, not guessed: a 1-layer and a 2-layer copy of the model run tunesmith's real
  training forward (decoder + fused chunked cross-entropy) on the meta device under
  ``torch.autograd.graph.saved_tensors_hooks``, which sees every tensor saved for backward;
  the difference is one layer, the rest is outside the layers. Attention is traced with
  the memory-efficient (flash) kernel PyTorch uses on CPU and CUDA, which saves O(T), not
  O(T²). With gradient checkpointing each layer keeps only its input, plus one layer's
  activations while it is recomputed. ``T`` is one forward pass:
  ``min(batch_size × max_length, max(max_tokens_per_forward, max_length))``, every position
  counted as supervised (an upper bound).
- **logits**: our fused cross-entropy never builds ``[T, V]`` logits; one chunk of
  ``loss_chunk_size`` rows is alive at a time: the fp32 chunk and logsumexp's exp temporary,
  ``2 × chunk × V × 4`` bytes, at the end of the forward.
- **workspace**: backward's transient activation gradients, modelled as one layer's saved
  activations.
- **runtime**: the process before the model is loaded (Python, torch, transformers, PEFT,
  bitsandbytes, tokenizer): measured on CPU (see ``RUNTIME_CPU``); on CUDA the figure is
  device memory and the CUDA context is not counted.

- **heap_slack**: freed memory glibc's heap still holds at a pass's peak. ``train.heap: compact``
  returns large freed buffers at once (0); ``fast`` reuses them from the heap (on CPU,
  :data:`HEAP_SLACK` × activations, :data:`HEAP_SLACK_CHECKPOINTED` × with gradient
  checkpointing; measured). See :func:`set_heap`; ``auto`` is fast unless the base is quantised
  or gradient checkpointing is on (:func:`static_heap`; at run time also unless memory is short).

The estimate is checked against measured peak RSS by ``bench/memory_bench.py`` (results in
bench/README.md).
"""

from __future__ import annotations

import copy
import ctypes
import math
import os
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from ..errors import ModelError
from .quantize import QuantSpec, quant_spec, quantized_weight_bytes

# Peak RSS of `tunesmith train` just before the model is loaded, on this project's CPU machine
# (x86-64, torch 2.13 CPU, transformers 5.23, peft 0.21, bitsandbytes 0.50), measured by
# bench/memory_bench.py ("runtime_rss" in its results).
RUNTIME_CPU = 420_000_000
TRACE_ATTENTION = "tunesmith_memory_trace"
MIN_8BIT_OPTIM_SIZE = 4096  # bitsandbytes keeps smaller tensors' optimizer state in 32 bits


@dataclass
class MemoryEstimate:
    """A run's estimated peak memory, by component (bytes; see the module docstring)."""

    mode: str
    device: str
    params: int
    trainable_params: int
    tokens_per_pass: int
    passes_per_step: int
    runtime: int
    weights: int
    trainable: int
    grads: int
    optimizer: int
    optimizer_step: int
    activations: int
    logits: int
    workspace: int
    heap: str = "compact"
    heap_slack: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def peak(self) -> int:
        held = self.grads if self.passes_per_step > 1 else 0
        forward_backward = held + self.activations + self.heap_slack + max(self.logits, self.workspace)
        step = self.grads + self.optimizer_step
        return self.runtime + self.weights + self.trainable + self.optimizer + max(forward_backward, step)

    def to_dict(self) -> dict:
        return {**asdict(self), "peak": self.peak}

    def summary(self) -> str:
        """One line for the training log."""
        return (
            f"memory estimate ({self.mode}, {self.device}): peak {gb(self.peak)} = runtime "
            f"{gb(self.runtime)} + weights {gb(self.weights)} + adapter/trainable+optimizer "
            f"{gb(self.trainable + self.optimizer + self.grads)} + activations "
            f"{gb(self.activations)} ({self.tokens_per_pass} tokens/pass) + logits chunk {gb(self.logits)}"
            + (f" + heap slack {gb(self.heap_slack)} (train.heap: {self.heap})" if self.heap_slack else "")
        )


def gb(n: float) -> str:
    """Bytes as GB (or MB below 0.1 GB)."""
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


# ---- the process heap ---------------------------------------------------------------------

M_MMAP_THRESHOLD = -3  # mallopt() parameter number, from glibc's <malloc.h>
MMAP_THRESHOLD = 1 << 20  # compact: allocations of at least 1 MiB are mapped and unmapped on their own
HEAP_THRESHOLDS = {"compact": MMAP_THRESHOLD, "fast": 32 << 20}
"""``train.heap`` -> the fixed mmap threshold it sets (see :func:`set_heap`)."""
HEAP_SLACK = 0.7
"""Freed memory glibc's heap holds at a pass's peak under ``train.heap: fast``, as a fraction of
the pass's saved activations: measured 0.65 (SmolLM2-135M LoRA, 1024-token passes) and 0.76
(the 32M bench model) with bench/memory_phases.py (bench/README.md, "The heap")."""
HEAP_SLACK_CHECKPOINTED = 2.5
"""The same with gradient checkpointing, where every layer's activations are made and freed
around the inputs it keeps: measured 2.5 (bench/memory_bench.py's 325M LoRA, 512-token passes)."""
MEMORY_SHARE = 0.8
"""``train.heap: auto`` picks compact when the fast estimate exceeds this share of the memory
the machine has available at start (``MemAvailable``)."""


def set_heap(policy: str) -> bool:
    """Fix glibc's mmap threshold for ``policy`` (``compact`` or ``fast``), for the rest of the
    process; allocations made before keep where they are.

    glibc serves an allocation from its heap, which keeps freed memory for reuse, unless the
    block is at least ``M_MMAP_THRESHOLD`` bytes; then it maps it separately and unmaps it on
    ``free``. By default that threshold is *dynamic*: every time a mapped block is freed it rises
    to that block's size (up to 32 MiB on 64-bit). A training step allocates and frees a stream
    of activation, gradient and dequantised-weight buffers of a few MB each.

    - ``compact`` (1 MiB): every such buffer is its own mapping, returned to the OS on ``free``,
      so the resident set is what is in use. Measured on ``bench/memory_bench.py``'s 325M QLoRA
      run: peak RSS 0.87 GB against 1.60 GB with glibc's default. The price is an ``mmap`` /
      ``munmap`` and freshly zeroed pages (a page fault per 4 KiB) for every buffer, every time:
      on the SFT bench that made a LoRA step 1.2-1.4x slower (bench/README.md, "The heap").
    - ``fast`` (32 MiB, fixed): the buffers come from the heap and are reused warm; only the
      largest (logits chunks, weights) are mapped. Freed memory held between passes, fragmented
      around tensors that outlive them, raises the peak by about :data:`HEAP_SLACK` x a pass's
      activations, which the estimate counts.

    Fixing the threshold also switches glibc's dynamic adjustment off. Returns True when
    applied; False on a C library other than glibc, or when the operator set the threshold
    (``MALLOC_MMAP_THRESHOLD_`` or ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=…``) — theirs wins.
    """
    if operator_heap():
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, HEAP_THRESHOLDS[policy]) == 1


def operator_heap() -> bool:
    """Whether the environment sets glibc's mmap threshold (``MALLOC_MMAP_THRESHOLD_`` or
    ``GLIBC_TUNABLES=…mmap_threshold…``): then it wins over ``train.heap``."""
    return "MALLOC_MMAP_THRESHOLD_" in os.environ or "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", "")


def static_heap(heap: str, quantised: bool, checkpointing: bool) -> str:
    """``train.heap`` without the machine: ``auto`` is compact for a run that chose memory over
    speed — a quantised base (QLoRA, 8-bit) or gradient checkpointing — and fast otherwise."""
    return _config_heap(heap, quantised, checkpointing)[0]


def _config_heap(heap: str, quantised: bool, checkpointing: bool) -> tuple[str, str]:
    """(policy, reason) as the config alone decides it: the one place auto's rule is written."""
    if heap != "auto":
        return heap, "train.heap"
    if quantised:
        return "compact", "auto: quantised base"
    if checkpointing:
        return "compact", "auto: gradient checkpointing"
    return "fast", "auto"


def available_memory() -> int | None:
    """Bytes the machine can still give (``MemAvailable`` of /proc/meminfo); None elsewhere."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def choose_heap(
    heap: str, quantised: bool, checkpointing: bool, fast_peak: int | None, available: int | None
) -> tuple[str, str]:
    """(policy, reason) for a run: ``heap`` unless ``auto``; ``auto`` is :func:`static_heap`'s
    choice, except compact when the estimated fast peak ``fast_peak`` exceeds
    :data:`MEMORY_SHARE` of ``available`` bytes (either None: not known, no check)."""
    policy, why = _config_heap(heap, quantised, checkpointing)
    if heap != "auto" or policy != "fast":
        return policy, why
    if fast_peak is not None and available is not None and fast_peak > MEMORY_SHARE * available:
        return (
            "compact",
            f"auto: estimated peak {gb(fast_peak)} is over {MEMORY_SHARE:.0%} of {gb(available)} available",
        )
    return policy, why


# ---- the model on the meta device -----------------------------------------------------------


def _meta_model(config, dtype: torch.dtype = torch.float32) -> nn.Module:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        try:
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        except Exception as exc:  # an architecture transformers cannot build
            raise ModelError(f"cannot build {type(config).__name__} to estimate memory: {exc}") from None
    model.config.use_cache = False
    return model


def _with_layers(config, n: int):
    c = copy.deepcopy(config)
    c.num_hidden_layers = n
    if isinstance(getattr(c, "layer_types", None), list):
        c.layer_types = c.layer_types[:n]
    return c


def _attach(model: nn.Module, adapter_cfg, full: bool) -> nn.Module:
    from .adapters import attach_adapter

    if full:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    for p in model.parameters():
        p.requires_grad_(False)
    return attach_adapter(model, replace(adapter_cfg, type="dora" if adapter_cfg.type == "dora" else "lora"))


def _trace_attention(
    module,
    query,
    key,
    value,
    attention_mask,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q=None,
    softcap=None,
    sliding_window=None,
    **kwargs,
):
    """tunesmith's varlen attention (models/attention.py) with the flash kernel made explicit,
    so a meta-device run saves what the CPU / CUDA kernels save (O(T), not T²): q, k, v (grouped-
    query keys / values unrepeated), the output and its log-sum-exp. The one-call CUDA kernels
    (models/varlen_kernels.py) save the same kind of set for plain segments."""
    from .attention import _eager_segment, _repeat_kv

    groups = query.shape[1] // key.shape[1]
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    bounds = cu_seq_lens_q.tolist() if cu_seq_lens_q is not None else [0, query.shape[2]]
    outs = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        q, k, v = query[:, :, start:end], key[:, :, start:end], value[:, :, start:end]
        window = sliding_window if sliding_window and end - start > sliding_window else None
        if softcap is not None or window is not None:
            k, v = _repeat_kv(k, groups), _repeat_kv(v, groups)
            outs.append(_eager_segment(q, k, v, scale, softcap, window, 0.0, False).transpose(1, 2))
        else:  # grouped-query keys / values unrepeated, as the CPU loop runs them
            outs.append(
                torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True, scale=scale)[
                    0
                ].transpose(1, 2)
            )
    return (outs[0].contiguous() if len(outs) == 1 else torch.cat(outs, dim=1)), None


def _saved_bytes(model: nn.Module, tokens: int, segment: int, chunk_size: int, vocab: int) -> int:
    """Bytes autograd saves for backward in one training forward of ``tokens`` tokens
    (segments of at most ``segment`` tokens, every position supervised)."""
    from transformers import AttentionInterface

    from ..data.collate import Batch
    from .adapters import unwrap
    from .forward import token_loss

    AttentionInterface.register(TRACE_ATTENTION, _trace_attention)
    unwrap(model).set_attn_implementation(TRACE_ATTENTION)
    model.train()
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        if storage._cdata not in params:
            saved[storage._cdata] = storage.nbytes()
        return t

    meta = torch.device("meta")
    bounds = list(range(0, tokens, segment)) + [tokens]
    positions = torch.cat([torch.arange(e - s) for s, e in zip(bounds[:-1], bounds[1:])])
    batch = Batch(
        input_ids=torch.zeros(1, tokens, dtype=torch.long, device=meta),
        position_ids=positions[None].to(meta),
        cu_seqlens=torch.tensor(bounds, dtype=torch.int32),
        max_seqlen=min(segment, tokens),
        target_positions=torch.zeros(tokens, dtype=torch.long, device=meta),
        target_ids=torch.zeros(tokens, dtype=torch.long, device=meta),
        n_examples=len(bounds) - 1,
    )
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        token_loss(model, batch, chunk_size=chunk_size)
    return sum(saved.values())


def activation_bytes(
    config,
    adapter_cfg,
    *,
    full: bool,
    tokens: int,
    segment: int,
    checkpointing: bool,
    chunk_size: int,
    dtype: torch.dtype = torch.float32,
) -> tuple[int, int]:
    """(activations saved in one forward pass, one layer's share) for ``tokens`` tokens.

    With ``adapter.top_layers`` only the top blocks carry an adapter; the blocks below them run
    forward only (nothing below needs a gradient), so they keep no activations: the per-layer
    share is traced on fully adapted 1- and 2-block models and counted for the adapted blocks."""
    vocab = int(config.vocab_size)
    n_layers = int(config.num_hidden_layers)
    adapted = n_layers if full or adapter_cfg.top_layers is None else min(adapter_cfg.top_layers, n_layers)
    if not full:
        adapter_cfg = replace(adapter_cfg, top_layers=None)

    def trace(layers: int, ckpt: bool) -> int:
        model = _meta_model(_with_layers(config, layers), dtype)
        if ckpt:
            if hasattr(model, "activation_checkpointing_enable"):
                model.activation_checkpointing_enable(
                    activation_checkpointing_kwargs={"use_reentrant": False}
                )
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = _attach(model, adapter_cfg, full)
        return _saved_bytes(model, tokens, segment, chunk_size, vocab)

    one, two = trace(1, False), trace(2, False)
    per_layer = max(two - one, 0)
    if not checkpointing:
        return one + (adapted - 1) * per_layer, per_layer
    one_ck, two_ck = trace(1, True), trace(2, True)
    kept_per_layer = max(two_ck - one_ck, 0)
    # Checkpointed: each layer keeps its input; the layer being recomputed holds its full share.
    return one_ck + (adapted - 1) * kept_per_layer + per_layer, per_layer


# ---- the estimate -----------------------------------------------------------------------------


def tokens_per_pass(batch_size: int, max_length: int, max_tokens_per_forward: int | None) -> int:
    """Tokens in one forward pass (upper bound): a micro-batch of ``batch_size`` rows of up to
    ``max_length`` tokens, split into passes of at most ``max_tokens_per_forward`` tokens — an
    example longer than that limit is a pass of its own."""
    micro = batch_size * max_length
    if not max_tokens_per_forward:
        return micro
    return min(micro, max(max_tokens_per_forward, max_length))


def _optimizer_bytes(trainable: list[torch.Tensor], optimizer: str, device: torch.device) -> tuple[int, int]:
    """(optimizer state bytes, transient bytes during a step)."""
    n = sum(p.numel() for p in trainable)
    if optimizer == "adamw":
        if device.type == "cpu":  # single-tensor AdamW: sqrt(v) and sqrt(v) / c of one tensor
            return 8 * n, 2 * 4 * max((p.numel() for p in trainable), default=0)
        return 8 * n, 4 * n  # foreach AdamW: sqrt(v) of every parameter
    state = 0
    for p in trainable:
        k = p.numel()
        state += 8 * k if k < MIN_8BIT_OPTIM_SIZE else 2 * k + 8 * -(-k // 256) + 2 * 256 * 4
    return state, 0


def estimate_memory(
    cfg, *, mode: str | None = None, device: str | torch.device | None = None
) -> MemoryEstimate:
    """Estimate the peak memory of training ``cfg`` (a :class:`RunConfig`).

    ``mode`` overrides the config's adapter: ``full``, ``lora``, ``dora`` or ``qlora``
    (``lora-8bit`` for LoRA over an 8-bit base). ``device`` defaults to the run's device.
    """
    from transformers import AutoConfig

    from .device import frozen_base_dtype, resolve_device, resolve_dtype
    from .load import check_model_dir

    folder = check_model_dir(cfg.model.path)  # a GGUF file: its dequantised folder
    device = torch.device(device) if device is not None else resolve_device(cfg.train.device)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    config = getattr(config, "text_config", None) or config
    adapter_cfg, model_cfg = cfg.adapter, cfg.model
    if mode is not None:
        adapter_cfg = replace(adapter_cfg, type={"full": "none", "lora-8bit": "lora"}.get(mode, mode))
        model_cfg = replace(model_cfg, load_in_4bit=mode == "qlora", load_in_8bit=mode == "lora-8bit")
    full = adapter_cfg.type == "none"
    spec: QuantSpec | None = None if full else quant_spec(model_cfg, adapter_cfg.type, device)
    if mode is None:
        mode = (
            "full"
            if full
            else ("qlora" if spec and spec.bits == 4 else "lora-8bit" if spec else adapter_cfg.type)
        )

    model = _attach(_meta_model(config), adapter_cfg, full)
    from .adapters import unwrap

    head = unwrap(model).get_output_embeddings()
    head_params = {id(p) for p in head.parameters()} if head is not None else set()
    seen, trainable, weights, params, trainable_n = set(), [], 0, 0, 0
    quantised_weights = set()
    # LoRA / DoRA under bf16 / fp16 autocast store the frozen linear weights in the half type
    # (models.device.frozen_base_dtype); everything else stays fp32.
    half_linears = frozen_base_dtype(
        adapter_cfg.type, resolve_dtype(cfg.train.dtype, device), spec is not None
    )
    if half_linears != torch.float32:
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and id(module.weight) not in head_params and "lora_" not in name:
                for p in module.parameters(recurse=False):
                    if not p.requires_grad:
                        quantised_weights.add(id(p))
                        weights += 2 * p.numel()
    if spec is not None:
        for name, module in model.named_modules():
            if (
                type(module) is nn.Linear
                and not module.weight.requires_grad
                and id(module.weight) not in head_params
                and "lora_" not in name
            ):
                quantised_weights.add(id(module.weight))
                weights += quantized_weight_bytes(module.weight.numel(), module.weight.shape[0], spec)
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        params += p.numel()
        if p.requires_grad:
            trainable.append(p)
            trainable_n += p.numel()
        elif id(p) not in quantised_weights:
            weights += 4 * p.numel()
    if not full:  # adapter parameters (and modules_to_save copies) are not the base model's
        params -= trainable_n

    t = cfg.train
    mtpf = t.max_tokens_per_forward
    if mtpf is None and device.type == "cpu":
        mtpf = 1024  # run.prepare's CPU default
    batch = t.batch_size if isinstance(t.batch_size, int) else 8
    tokens = tokens_per_pass(batch, t.max_length, mtpf)
    passes = t.grad_accum * math.ceil(batch * t.max_length / tokens)
    act_dtype = torch.float32
    if device.type == "cuda" and t.dtype in ("auto", "bf16", "fp16"):
        act_dtype = torch.float16 if t.dtype == "fp16" else torch.bfloat16  # autocast
    activations, per_layer = activation_bytes(
        config,
        adapter_cfg,
        full=full,
        tokens=tokens,
        segment=t.max_length,
        checkpointing=t.gradient_checkpointing,
        chunk_size=t.loss_chunk_size,
        dtype=act_dtype,
    )
    chunk = min(t.loss_chunk_size, tokens)
    logits = 2 * chunk * int(config.vocab_size) * 4
    optimizer, step_temp = _optimizer_bytes(trainable, getattr(t, "optimizer", "adamw"), device)
    heap = static_heap(getattr(t, "heap", "auto"), spec is not None, t.gradient_checkpointing)
    # The host heap's slack only adds to a CPU run's peak (on CUDA activations are device memory).
    factor = HEAP_SLACK_CHECKPOINTED if t.gradient_checkpointing else HEAP_SLACK
    slack = int(factor * activations) if heap == "fast" and device.type == "cpu" else 0
    notes = []
    if act_dtype != torch.float32:
        notes.append("activations traced in the autocast dtype (not measured on a GPU)")
    return MemoryEstimate(
        mode=mode,
        device=device.type,
        params=params,
        trainable_params=trainable_n,
        tokens_per_pass=tokens,
        passes_per_step=passes,
        runtime=RUNTIME_CPU if device.type == "cpu" else 0,
        weights=weights,
        trainable=4 * trainable_n,
        grads=4 * trainable_n,
        optimizer=optimizer,
        optimizer_step=step_temp,
        activations=activations,
        logits=logits,
        workspace=per_layer,
        heap=heap,
        heap_slack=slack,
        notes=notes,
    )


def format_table(estimates: list[MemoryEstimate], chosen: str | None = None) -> str:
    """A side-by-side table of estimates (GB), the configured mode marked with ``*``."""
    rows = [
        ("parameters", lambda e: f"{e.params / 1e6:,.1f}M"),
        ("trainable parameters", lambda e: f"{e.trainable_params / 1e6:,.2f}M"),
        ("weights", lambda e: gb(e.weights)),
        ("adapter/trainable weights", lambda e: gb(e.trainable)),
        ("gradients", lambda e: gb(e.grads)),
        ("optimizer state", lambda e: gb(e.optimizer)),
        ("optimizer step temporaries", lambda e: gb(e.optimizer_step)),
        ("activations", lambda e: gb(e.activations)),
        ("logits chunk", lambda e: gb(e.logits)),
        ("heap slack (train.heap)", lambda e: gb(e.heap_slack)),
        ("runtime", lambda e: gb(e.runtime)),
        ("peak", lambda e: gb(e.peak)),
    ]
    heads = [e.mode + ("*" if e.mode == chosen else "") for e in estimates]
    width = max(len(r[0]) for r in rows) + 2
    col = max(12, *(len(h) + 2 for h in heads))
    lines = ["".ljust(width) + "".join(h.rjust(col) for h in heads)]
    for label, fmt in rows:
        lines.append(label.ljust(width) + "".join(fmt(e).rjust(col) for e in estimates))
    return "\n".join(lines)
