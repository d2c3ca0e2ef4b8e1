"""k-bit base models for QLoRA: load with bitsandbytes, freeze, dequantise for merging.

QLoRA (Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs") stores the frozen
base model's linear weights in 4 bits — NF4, a data type whose 16 levels are quantiles of a
normal distribution (§3 "4-bit NormalFloat"), or plain FP4 — in blocks of 64 weights, each with
its own absmax scale; *double quantisation* (§3) stores those scales in 8 bits too. For every
matmul a layer dequantises its weight to ``compute_dtype``; LoRA adapters stay in full precision
and are the only trained parameters. Embeddings, norms and the LM head are not quantised
(transformers' bitsandbytes integration skips the output head; the rest are not ``nn.Linear``).

bitsandbytes runs this on CPU (its native CPU backend, ≥ 0.46) as well as on CUDA. Two details
of the CPU backend matter for training and are handled here:

- Loading goes through transformers' bitsandbytes integration, but tensors are read from the
  safetensors files with ``pread`` instead of transformers' default memory map: a map keeps the
  whole full-precision checkpoint resident (as file pages counted in the process's memory) for as
  long as the model lives, which would cancel most of the saving on a CPU machine.
- ``Linear4bit`` repacks its weight into an inference-only layout the first time it runs in
  ``eval()`` mode without gradients on CPUs with AVX512-BF16, and then keeps using that layout
  — including in later training passes, where it computes in bf16 with no gradient for the
  layer's input. Training evaluates in between steps, so :func:`load_quantized` turns the
  repacking off (the per-module ``support_avx512bf16_for_cpu`` switch).
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, ModelError

log = logging.getLogger("tunesmith")

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BLOCKSIZE_4BIT = 64  # bitsandbytes' default (and QLoRA's) block size for 4-bit weights
BLOCKSIZE_NESTED = 256  # blocks of 4-bit scales quantised together with double quantisation


@dataclass(frozen=True)
class QuantSpec:
    """How a base model's linear layers are quantised (``bits`` 4 or 8)."""

    bits: int
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: torch.dtype = torch.float32

    def describe(self) -> str:
        if self.bits == 8:
            return "8-bit LLM.int8()"
        dq = " + double quant" if self.double_quant else ""
        return f"4-bit {self.quant_type}{dq}, compute {str(self.compute_dtype).removeprefix('torch.')}"


def quant_spec(model_cfg, adapter_type: str, device: torch.device | str) -> QuantSpec | None:
    """The :class:`QuantSpec` a run asks for (None: no quantisation).

    ``adapter.type: qlora`` implies 4 bits. ``compute_dtype: auto`` is bf16 on a CUDA device
    that supports it (fp16 otherwise) and fp32 on CPU, where it keeps the dequantised matmul
    exact and the training path free of bf16 rounding.
    """
    bits = 4 if (model_cfg.load_in_4bit or adapter_type == "qlora") else 8 if model_cfg.load_in_8bit else 0
    if not bits:
        return None
    device = torch.device(device)
    if model_cfg.compute_dtype != "auto":
        compute = DTYPES[model_cfg.compute_dtype]
    elif device.type == "cuda":
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        compute = torch.float32
    return QuantSpec(
        bits=bits, quant_type=model_cfg.quant_type, double_quant=model_cfg.double_quant, compute_dtype=compute
    )


def spec_from_dict(d: dict | None) -> QuantSpec | None:
    """A :class:`QuantSpec` from a resolved run config's ``model`` section (None: unquantised)."""
    if not d or not (d.get("load_in_4bit") or d.get("load_in_8bit")):
        return None
    compute = d.get("compute_dtype") or "fp32"
    return QuantSpec(
        bits=4 if d.get("load_in_4bit") else 8,
        quant_type=d.get("quant_type", "nf4"),
        double_quant=bool(d.get("double_quant", True)),
        compute_dtype=DTYPES.get(compute, torch.float32),
    )


def dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


_BNB_LOCK = threading.Lock()  # the window in which import_peft hides bitsandbytes


def import_peft() -> None:
    """Import PEFT — without importing bitsandbytes unless it is loaded already.

    PEFT imports bitsandbytes whenever it is installed (``peft.helpers`` at import, LoRA's layer
    dispatch on every ``get_peft_model``), and bitsandbytes imports torch's inductor: about a
    second of every run's start-up, spent for nothing unless a layer is quantised. A quantised
    layer exists only after bitsandbytes was imported, and tunesmith imports it in one place
    (:func:`require_bitsandbytes`). So when it is not loaded yet, PEFT is imported with it
    hidden and PEFT's cached "is bitsandbytes available" answers are primed to no;
    :func:`require_bitsandbytes` clears them when a quantised model is first loaded. Every
    tunesmith use of PEFT calls this before its ``from peft import …``."""
    if "peft" in sys.modules:
        return
    with _BNB_LOCK:
        if "peft" in sys.modules or "bitsandbytes" in sys.modules:
            import peft  # noqa: F401

            return
        sys.modules["bitsandbytes"] = None  # `import bitsandbytes` fails, find_spec says absent
        try:
            import peft  # noqa: F401
            from peft import import_utils

            import_utils.is_bnb_available()
            import_utils.is_bnb_4bit_available()
        finally:
            if "bitsandbytes" in sys.modules and sys.modules["bitsandbytes"] is None:
                del sys.modules["bitsandbytes"]


def require_bitsandbytes():
    """Import bitsandbytes, or fail with how to install it (and let PEFT see it from now on)."""
    # The CPU backend tries to fetch an optional faster kernel from the Hugging Face hub at
    # import and logs a warning when it cannot; the native CPU kernels are used either way.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    with _BNB_LOCK:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ConfigError(
                "a quantised base (adapter.type: qlora, model.load_in_4bit / load_in_8bit) "
                "needs bitsandbytes: pip install 'tunesmith[qlora]' "
                "(or pip install 'bitsandbytes>=0.46')"
            ) from None
    peft_utils = sys.modules.get("peft.import_utils")
    if peft_utils is not None:  # PEFT was imported with bitsandbytes hidden (import_peft)
        peft_utils.is_bnb_available.cache_clear()
        peft_utils.is_bnb_4bit_available.cache_clear()
        helpers = sys.modules.get("peft.helpers")
        if helpers is not None and getattr(helpers, "bnb", bnb) is None:
            helpers.bnb = bnb
    return bnb


def bnb_config(spec: QuantSpec):
    """transformers' ``BitsAndBytesConfig`` for ``spec``."""
    require_bitsandbytes()
    from transformers import BitsAndBytesConfig

    if spec.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=spec.quant_type,
        bnb_4bit_use_double_quant=spec.double_quant,
        bnb_4bit_compute_dtype=spec.compute_dtype,
    )


def load_quantized(
    path: str | Path,
    config,
    spec: QuantSpec,
    *,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str | None = "sdpa",
    trust_remote_code: bool = False,
) -> nn.Module:
    """Load the causal LM at ``path`` with its linear layers quantised per ``spec``.

    ``config`` is the already-read ``AutoConfig``. Unquantised parameters (embeddings, norms,
    LM head) are kept in ``dtype``. Tensors are streamed from the safetensors files with
    ``pread`` (see the module docstring); the returned model owns all of its memory.
    """
    from safetensors import safe_open
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise ModelError(f"{path} has no .safetensors weights (tunesmith loads safetensors only)")
    try:
        model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        raise ModelError(f"{path}: {type(config).__name__} is not a causal LM transformers knows") from None
    device = torch.device(device)
    target = f"cuda:{device.index or 0}" if device.type == "cuda" else "cpu"
    handles = [safe_open(str(f), framework="pt", device="cpu", backend="pread") for f in files]
    try:
        # Lazy slices: transformers materialises (reads) one tensor at a time as it quantises.
        state = {k: h.get_slice(k) for h in handles for k in h.keys()}
        kwargs = dict(
            config=config,
            state_dict=state,
            quantization_config=bnb_config(spec),
            device_map={"": target},
            dtype=dtype,
            trust_remote_code=trust_remote_code,
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*inputs will be cast from.*")
            try:
                model = model_class.from_pretrained(None, attn_implementation=attn_implementation, **kwargs)
            except (ValueError, ImportError) as exc:
                if (
                    attn_implementation is None
                    or "attn" not in str(exc).lower()
                    and "sdpa" not in str(exc).lower()
                ):
                    raise ModelError(f"could not load {path} quantised ({spec.describe()}): {exc}") from None
                model = model_class.from_pretrained(None, **kwargs)
    finally:
        for h in handles:
            h.__exit__(None, None, None)
    model.name_or_path = str(path)
    model.config._name_or_path = str(path)
    for module in quantized_linears(model).values():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            # Never switch to the inference-only packed layout (see the module docstring): it
            # would change numerics between training and evaluation, cut the input gradient,
            # and leave the stored weight in a layout dequantisation does not read.
            module.support_avx512bf16_for_cpu = False
    _release_freed_heap()
    return model


def _release_freed_heap() -> None:
    """Return the freed full-precision read buffers to the OS (glibc keeps freed heap pages
    mapped otherwise, and the process would carry them through training)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def quantized_linears(model: nn.Module) -> dict[str, nn.Module]:
    """Name -> bitsandbytes 4-bit / 8-bit linear module, for every quantised layer of ``model``."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return {}
    kinds = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds)}


def prepare_for_training(model: nn.Module) -> int:
    """Freeze every base parameter and keep 4-bit layers on their training path.

    Returns the number of quantised layers. Call before attaching the adapter.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    layers = quantized_linears(model)
    for module in layers.values():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            raise ModelError(
                "a 4-bit layer may switch to bitsandbytes' inference-only CPU layout; "
                "load quantised models with tunesmith.models.quantize.load_quantized"
            )
    if not layers:
        raise ModelError("quantisation was requested but the model has no bitsandbytes linear layer")
    return len(layers)


def dequantized_weight(module: nn.Module) -> torch.Tensor:
    """The full-precision (fp32) weight a bitsandbytes linear layer computes with."""
    from peft.utils.integrations import dequantize_bnb_weight

    weight = module.weight
    state = getattr(module, "state", None)
    return dequantize_bnb_weight(weight, state=state).to(torch.float32)


def dequantize_into(quantized: nn.Module, target: nn.Module) -> int:
    """Copy the dequantised weight of every quantised layer of ``quantized`` into the same-named
    ``nn.Linear`` of ``target`` (a full-precision copy of the same architecture).

    This is the base a QLoRA adapter was trained against — not the original full-precision
    weights — so merging into it reproduces the trained model. Returns the layers copied.
    """
    targets = dict(target.named_modules())
    count = 0
    with torch.no_grad():
        for name, module in quantized_linears(quantized).items():
            name = name.replace(".base_layer", "")  # the layer's name inside a PEFT wrapper
            dest = targets.get(name)
            if not isinstance(dest, nn.Linear):
                raise ModelError(f"dequantise: no linear layer '{name}' in the full-precision model")
            w = dequantized_weight(module)
            if tuple(w.shape) != tuple(dest.weight.shape):
                raise ModelError(
                    f"dequantise: '{name}' is {tuple(w.shape)} quantised but "
                    f"{tuple(dest.weight.shape)} in the base model"
                )
            dest.weight.data = w.to(dest.weight.device)
            if module.bias is not None and dest.bias is not None:
                dest.bias.data = module.bias.detach().to(torch.float32).to(dest.bias.device).clone()
            count += 1
    return count


def quantized_weight_bytes(numel: int, out_features: int, spec: QuantSpec) -> int:
    """Bytes a bitsandbytes layer of ``numel`` weights holds (data + quantisation constants).

    4-bit: two weights per byte plus one absmax per 64-weight block — fp32 (4 bytes), or with
    double quantisation one byte plus an fp32 scale per 256 blocks (QLoRA §3, "Double
    Quantization"). 8-bit (LLM.int8()): one byte per weight plus an fp32 scale per output row.
    """
    if spec.bits == 8:
        return numel + 4 * out_features
    blocks = -(-numel // BLOCKSIZE_4BIT)
    if spec.double_quant:
        scales = blocks + 4 * -(-blocks // BLOCKSIZE_NESTED) + 4 * 256  # + the 256-entry code
    else:
        scales = 4 * blocks
    return (numel + 1) // 2 + scales
