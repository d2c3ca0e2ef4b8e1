"""Token statistics of a data file, and a back-of-the-envelope training time/memory estimate.

:class:`TokenStats` renders examples with the real chat template (:class:`Renderer`), so
"trained tokens" means exactly the tokens the loss mask supervises, and keeps one integer per
example (the memory of ``tunesmith data check`` stays bounded per row).

This is an *estimate*, good to a factor of about two; it exists so a user sees before training
whether a run takes minutes or days and fits in memory or not. The formulas:

**Parameters** are read from the safetensors headers of the model folder (no weights loaded).
``N`` counts the parameters that take part in matrix multiplies: every 2-D ``.weight`` of the
decoder layers plus the LM head (the embedding lookup costs no FLOPs; a tied head counts once
as a matmul). ``N_lora = r · (d_in + d_out)`` summed over those decoder projections
(``all-linear`` targets, the default adapter).

**Compute per token** (Kaplan et al. 2020, §2.1: forward ≈ 2N FLOPs per token, backward ≈ 4N):

- full fine-tuning: ``6·N``;
- LoRA / DoRA / QLoRA: ``4·N + 6·N_lora`` — the frozen base needs its forward (2N) and the gradient
  with respect to its inputs (2N) but no weight gradient;
- DPO processes prompt + chosen *and* prompt + rejected (×2 tokens) and a frozen reference forward
  (+2N per token); KTO adds the reference forward only; GRPO is dominated by generation and is not
  estimated.

The attention term (``≈ 6·L·d·n`` per token at length n) is left out; it matters only for
sequences much longer than the model width. **Time** = tokens per epoch × FLOPs per token / rate,
where the rate is a measured dense-matmul peak of this machine times 0.5 — the utilisation
tunesmith reached in ``bench/`` (53 % on CPU).

**Memory** = weights (4 bytes/parameter in fp32 on CPU, 2 in bf16 on a GPU)
+ trainable state (16 bytes per trainable parameter: fp32 weight, gradient and two Adam moments;
full fine-tuning: 12 extra bytes per parameter on top of the weights)
+ activations: ``34 · d · L`` bytes per token in 16-bit (Korthikanti et al. 2022, eq. 2 without the
attention-score term that fused attention avoids), doubled in fp32, for one row of ``max_length``
tokens (two rows for DPO).
"""

from __future__ import annotations

import json
import math
import statistics
import struct
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from ... import jsontext
from ...errors import DataError
from .. import formats as F
from ..example import Example
from ..render import Rendered, Renderer

UTILISATION = 0.5
ACTIVATION_BYTES_PER_TOKEN_LAYER_WIDTH = 34  # 16-bit; Korthikanti et al. 2022


class TokenStats:
    """Per-example token counts through the real chat template, rendered in small batches.

    ``report(code, line, message)`` receives ``example_truncated`` / ``no_trained_tokens``
    warnings and ``template_error`` errors. Totals count what training sees: examples are cut
    at ``max_length`` (from the end), and those left without a trained token are dropped.
    """

    def __init__(
        self, tokenizer: Any, max_length: int, report: Callable[[str, int, str], None], batch_size: int = 64
    ):
        # No truncation in the renderer: the full length is what the statistics describe.
        self.renderer = Renderer(tokenizer, max_length=2**31 - 1)
        self.max_length, self.report, self.batch_size = max_length, report, batch_size
        self.lengths = array("I")
        self.tokens = self.trained = self.over = self.dropped = 0
        self._pending: list[tuple[int, Example]] = []

    def add(self, line: int, example: Example) -> None:
        """Queue one example found at ``line``; rendering happens in batches."""
        self._pending.append((line, example))
        if len(self._pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Render and count every queued example."""
        pending, self._pending = self._pending, []
        try:
            rendered: list[Rendered | None] = list(self.renderer.render_many([ex for _, ex in pending]))
        except DataError:  # one bad example fails the batch: redo one by one to name it
            rendered = [self._render_one(line, ex) for line, ex in pending]
        for (line, _), result in zip(pending, rendered):
            if result is not None:
                self._count(line, result)

    def _render_one(self, line: int, example: Example) -> Rendered | None:
        try:
            return self.renderer(example)
        except DataError as err:
            self.report(
                "template_error",
                line,
                f"Example {line} cannot be rendered with the model's chat template: {err.bare_message}",
            )
            return None

    def _count(self, line: int, rendered: Rendered) -> None:
        n, cap = len(rendered.input_ids), self.max_length
        self.lengths.append(n)
        if n > cap:
            self.over += 1
            self.report(
                "example_truncated",
                line,
                f"Example {line} has {n} tokens, more than "
                f"max_length {cap}; training keeps the first {cap} (truncation removes "
                "tokens from the end)",
            )
        trained = sum(rendered.loss_mask[1:cap])  # token 0 is never a target
        if trained == 0:
            self.dropped += 1
            self.report(
                "no_trained_tokens",
                line,
                f"Example {line} has no trained token"
                + (f" within the first {cap} tokens" if n > cap else "")
                + "; training drops it",
            )
            return
        self.tokens += min(n, cap)
        self.trained += trained

    def summary(self) -> dict[str, Any]:
        """min / median / p95 / max / mean tokens per example (untruncated) and the totals."""
        self.flush()
        out: dict[str, Any] = {
            "max_length": self.max_length,
            "over_max_length": self.over,
            "dropped_no_trained_tokens": self.dropped,
            "total_after_truncation": self.tokens,
            "trained": self.trained,
        }
        if self.lengths:
            ordered = sorted(self.lengths)
            out.update(
                examples=len(ordered),
                min=ordered[0],
                median=statistics.median(ordered),
                p95=ordered[math.ceil(0.95 * len(ordered)) - 1],
                max=ordered[-1],
                mean=round(sum(ordered) / len(ordered), 1),
                total=sum(ordered),
            )
        return out


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a model folder (see module docstring for what each means)."""

    total: int
    matmul: int
    lora: int
    layers: int
    hidden: int


def count_params(model_dir: str | Path, lora_r: int = 16) -> ParamCounts | None:
    """Read the safetensors headers of ``model_dir``; None when it has no safetensors weights."""
    folder = Path(model_dir)
    shapes = _safetensors_shapes(folder)
    if not shapes:
        return None
    config = _read_config(folder)
    total = matmul = lora = 0
    for name, shape in shapes.items():
        size = _product(shape)
        total += size
        is_decoder_linear = ".layers." in name and name.endswith(".weight") and len(shape) == 2
        if is_decoder_linear:
            matmul += size
            lora += lora_r * (shape[0] + shape[1])
        elif "lm_head" in name:
            matmul += size
    if not any("lm_head" in name for name in shapes):  # tied head: the embedding matrix
        matmul += next((_product(s) for n, s in shapes.items() if "embed_tokens" in n), 0)
    layers = int(config.get("num_hidden_layers") or 0)
    hidden = int(config.get("hidden_size") or 0)
    return ParamCounts(total=total, matmul=matmul, lora=lora, layers=layers, hidden=hidden)


def _product(shape: list[int]) -> int:
    out = 1
    for dim in shape:
        out *= int(dim)
    return out


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config.get("text_config", config) if isinstance(config, dict) else {}


def _safetensors_shapes(folder: Path) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with file.open("rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                if length > 100_000_000:  # a corrupt header; do not read 100s of MB
                    continue
                header = jsontext.loads(handle.read(length))
        except (OSError, ValueError, struct.error):
            continue
        for name, info in header.items():
            if name != "__metadata__" and isinstance(info, dict) and "shape" in info:
                shapes[name] = list(info["shape"])
    return shapes


def measure_flop_rate(seconds: float = 0.25) -> float:
    """Dense fp32 matmul FLOP/s of this machine (GPU if torch sees one), measured briefly."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    n = 1024
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b  # warm-up: thread pool and allocator
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or reps < 2:
        a @ b
        reps += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def estimate_training(
    params: ParamCounts,
    *,
    tokens: int,
    max_length: int,
    method: str = "sft",
    adapter: str = "lora",
    flop_rate: float | None = None,
    on_gpu: bool | None = None,
) -> dict[str, Any]:
    """Time (seconds per epoch) and peak memory (bytes) estimate; see the module docstring.

    ``tokens`` is the number of tokens per epoch after truncation (for DPO: prompt + chosen).
    ``adapter`` is ``lora``/``dora``/``qlora`` or ``none`` (full fine-tuning).
    """
    if on_gpu is None:
        import torch

        on_gpu = torch.cuda.is_available()
    full = adapter in ("none", "full")
    per_token = 6 * params.matmul if full else 4 * params.matmul + 6 * params.lora
    token_factor, rows = 1, 1
    if method == "dpo":
        per_token += 2 * params.matmul  # frozen reference forward
        token_factor, rows = 2, 2
    elif method == "kto":
        per_token += 2 * params.matmul
    out: dict[str, Any] = {
        "method": method,
        "adapter": "full" if full else adapter,
        "params": params.total,
        "trainable_params": params.total if full else params.lora,
        "flops_per_token": per_token,
        "tokens_per_epoch": tokens * token_factor,
        "memory_bytes": _memory(
            params, full=full, on_gpu=on_gpu, row_tokens=max_length * rows, bits4=adapter == "qlora"
        ),
        "note": "estimate (±2x): FLOPs = tokens x per-token cost / (0.5 x measured matmul rate); "
        "memory = runtime + weights + trainable state + activations of one row",
    }
    if method == "grpo":
        out.update(
            seconds_per_epoch=None,
            flop_rate=None,
            note=out["note"] + "; GRPO time is dominated by generation and not estimated",
        )
        return out
    rate = (flop_rate if flop_rate is not None else measure_flop_rate()) * UTILISATION
    out["flop_rate"] = rate
    out["seconds_per_epoch"] = tokens * token_factor * per_token / rate if rate else None
    return out


def _memory(params: ParamCounts, *, full: bool, on_gpu: bool, row_tokens: int, bits4: bool) -> dict[str, int]:
    weight_bytes = 2 if on_gpu else 4
    weights = params.total * (0.5 if bits4 else weight_bytes)
    state = params.total * 12 if full else params.lora * 16
    activations = (
        ACTIVATION_BYTES_PER_TOKEN_LAYER_WIDTH
        * params.hidden
        * params.layers
        * row_tokens
        * (weight_bytes // 2)
    )
    # The runtime itself: measured RSS of Python + torch + transformers + PEFT before any model
    # is loaded is ~0.3 GB on CPU; on a GPU the CUDA context takes ~0.5 GB of device memory.
    runtime = 0.5e9 if on_gpu else 0.3e9
    parts = {
        "runtime": int(runtime),
        "weights": int(weights),
        "trainable_state": int(state),
        "activations": int(activations),
    }
    parts["total"] = sum(parts.values())
    return parts


# ---- glue for data check -------------------------------------------------------------------

_SFT_FORMATS = (F.OPENAI_CHAT, F.SHAREGPT, F.ALPACA, F.PROMPT_COMPLETION, F.TEXT)


def stats_example(row: dict, fmt: str, path: str, line: int) -> Example | None:
    """The example whose tokens represent ``row`` (DPO: prompt + preferred output)."""
    at = F.Where(path, line)
    if fmt in _SFT_FORMATS:
        return F.to_example(row, fmt, path, line)
    if fmt == F.OPENAI_PREFERENCE:
        messages = F.check_messages(row["input"]["messages"], "input.messages", at) + F.check_messages(
            row["preferred_output"], "preferred_output", at
        )
        return Example(kind="chat", source=at.source, messages=messages, tools=row["input"].get("tools"))
    if fmt in (F.PREFERENCE_PAIRS, F.KTO):
        completion = row["chosen" if fmt == F.PREFERENCE_PAIRS else "completion"]
        prompt = row["prompt"]
        if isinstance(prompt, str) and isinstance(completion, str):
            return Example(kind="completion", source=at.source, prompt=prompt, completion=completion)
        if isinstance(prompt, list) and isinstance(completion, list):
            context = [
                dict(m, weight=0) if m.get("role") == "assistant" else m
                for m in F.check_messages(prompt, "prompt", at)
            ]
            return Example(
                kind="chat",
                source=at.source,
                messages=context + F.check_messages(completion, "completion", at),
            )
    return None  # prompt-only rows have nothing to train on


def estimate_for(
    model_dir: str | PathLike[str], tokens: dict[str, Any], method: str, adapter: str, flop_rate: float | None
) -> dict[str, Any] | None:
    """The estimate for a model folder (or GGUF file) and :meth:`TokenStats.summary` output
    (None: no weights)."""
    from ...models.gguf_import import resolve_model_path

    params = count_params(resolve_model_path(model_dir))
    if params is None:
        return None
    return estimate_training(
        params,
        tokens=tokens["total_after_truncation"],
        max_length=min(tokens["max_length"], tokens.get("max", 0) or 1),
        method=method,
        adapter=adapter,
        flop_rate=flop_rate,
    )
