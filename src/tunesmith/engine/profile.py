"""Where an optimizer step's time goes (``tunesmith train --profile N``, ``train.profile_steps``).

The profiled steps run under ``torch.profiler`` (CPU activity; CUDA too when the model is on a
GPU) and each step's wall time is split into the categories of :data:`CATEGORIES`:

- ``data``: building the step's window (collation, moving it to the device) — wall time of the
  engine's ``tunesmith:data`` scope, Python included;
- ``attention``: the attention modules minus their projections (the kernel, rotary embeddings,
  head reshapes), forward and backward;
- ``lora``: the adapter's matmuls and its scale-and-add (PEFT's ``lora_A`` / ``lora_B``, DoRA's
  magnitude), forward and backward;
- ``base``: the frozen (or fully trained) linear layers: q/k/v/o, gate/up/down …;
- ``lm_head_loss``: gathering the supervised positions, the LM head and the loss (tunesmith's
  fused chunked cross-entropy computes its gradients during the forward);
- ``optimizer``: gradient clipping, the optimizer step and zeroing the gradients, plus
  accumulating gradients into ``.grad`` during backward — wall time, Python included;
- ``other``: every other operator (norms, activations, residual adds, embedding, casts);
- ``overhead``: the rest of the step's wall time — Python, module calls, the autograd engine's
  bookkeeping and the profiler's own cost, i.e. time spent outside any operator.

Attribution: a forward operator belongs to the nearest labelled scope around it (forward hooks
label LoRA layers, linear layers and attention modules; the engine, the loss and the fused LoRA
layer label their own code); a backward operator belongs to a labelled scope inside its
autograd node when there is one (the fused LoRA layer's backward labels its base matmul), else
to the forward operator that created the node (the profiler records the same sequence number
for both). Times are in operators, summed over the
profiled steps and divided by their number; with ``with_flops`` the matmul FLOPs per category
give each category's achieved GFLOP/s, compared with a measured fp32 matmul peak on CPU.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import defaultdict
from pathlib import Path

import torch

from ..models.forward import PROFILE_PREFIX as PREFIX
from ..models.forward import profile_scope as scope

CATEGORIES = ("data", "attention", "lora", "base", "lm_head_loss", "optimizer", "other", "overhead")
WALL_SCOPES = ("data", "optimizer")  # categories measured as scope wall time, Python included
_MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
_BACKWARD = "autograd::engine::evaluate_function: "
LABELS = {
    "data": "data (collate, to device)",
    "attention": "attention (kernel, rotary, reshapes)",
    "lora": "LoRA matmuls + scale/add",
    "base": "base linear matmuls",
    "lm_head_loss": "LM head + loss",
    "optimizer": "optimizer (clip, step, zero, grad accumulate)",
    "other": "other ops (norms, activations, residuals)",
    "overhead": "Python / framework overhead",
}


def _module_category(module: torch.nn.Module) -> str | None:
    """The category a module's own operators belong to, or None to inherit its parent's."""
    if hasattr(module, "base_layer") and hasattr(module, "lora_A"):
        return "lora"  # PEFT's LoRA wrapper; its base_layer is labelled base below
    if isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear8bitLt", "Linear4bit"):
        return "base"
    if type(module).__name__.endswith("Attention"):
        return "attention"
    return None


class _Hooks:
    """Forward hooks that open a labelled profiler scope around each categorised module."""

    def __init__(self, model: torch.nn.Module):
        adapter_parts = {
            id(part) for m in model.modules() if _module_category(m) == "lora" for part in _adapter_parts(m)
        }
        self.handles, self.stack = [], []
        for module in model.modules():
            category = _module_category(module)
            if category is None:
                continue
            if id(module) in adapter_parts:
                category = "lora"  # lora_A / lora_B are nn.Linear too
            self.handles.append(module.register_forward_pre_hook(self._enter(category)))
            self.handles.append(module.register_forward_hook(self._exit))

    def _enter(self, category: str):
        def hook(module, args):
            rf = scope(category)
            rf.__enter__()
            self.stack.append(rf)

        return hook

    def _exit(self, module, args, output):
        if self.stack:
            self.stack.pop().__exit__(None, None, None)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def _adapter_parts(lora: torch.nn.Module) -> list[torch.nn.Module]:
    """The adapter's own submodules of a PEFT LoRA layer (everything but its base layer)."""
    return [m for name, m in lora.named_modules() if name and not name.startswith("base_layer")]


def _scope_category(event) -> str | None:
    """The category of the nearest labelled ancestor (the event itself included)."""
    e = event
    while e is not None:
        if e.name.startswith(PREFIX) and e.name[len(PREFIX) :] in CATEGORIES:
            return e.name[len(PREFIX) :]
        e = e.cpu_parent
    return None


def _backward_node(event):
    e = event.cpu_parent
    while e is not None:
        if e.name.startswith(_BACKWARD):
            return e
        e = e.cpu_parent
    return None


def _is_operator(name: str) -> bool:
    return "::" in name and not name.startswith(("autograd::", PREFIX)) and not name.startswith("torch::")


def _has_operator_ancestor(event) -> bool:
    e = event.cpu_parent
    while e is not None:
        if _is_operator(e.name):
            return True
        e = e.cpu_parent
    return False


def attribute(events) -> dict:
    """Split profiled ``events`` (``torch.profiler`` FunctionEvents of whole steps, each step
    inside a ``tunesmith:step`` scope) into seconds and matmul FLOPs per category, summed.

    Returns ``{"steps": n, "wall_s": Σ step wall, "seconds": {cat: s}, "flops": {cat: n}}``.
    """
    events = sorted(events, key=lambda e: e.time_range.start)
    # An operator records the sequence number the next autograd node will get, whether or not
    # it creates one; the last one (in time) to record a number is the node's creator.
    forward_category: dict[int, str] = {}
    for e in events:
        # (custom autograd functions record under their own name, not as an aten operator)
        if e.sequence_nr < 0 or e.name.startswith((PREFIX, _BACKWARD)):
            continue
        if _backward_node(e) is None:
            forward_category[e.sequence_nr] = _scope_category(e) or "other"
    seconds: dict[str, float] = defaultdict(float)
    flops: dict[str, float] = defaultdict(float)
    wall, steps = 0.0, 0
    for e in events:
        duration = (e.time_range.end - e.time_range.start) / 1e6
        if e.name == PREFIX + "step":
            wall += duration
            steps += 1
            continue
        if e.name.startswith(PREFIX) and e.name[len(PREFIX) :] in WALL_SCOPES:
            if e.cpu_parent is None or _scope_category(e.cpu_parent) not in WALL_SCOPES:
                seconds[e.name[len(PREFIX) :]] += duration
            continue
        if not _is_operator(e.name) and not e.name.startswith(_BACKWARD + "torch::autograd::AccumulateGrad"):
            continue
        if _scope_category(e) in WALL_SCOPES:
            continue  # counted as the scope's wall time
        if e.name.startswith(_BACKWARD):
            seconds["optimizer"] += duration  # AccumulateGrad: writing .grad
            continue
        if _has_operator_ancestor(e):
            flops[_category(e, forward_category)] += _matmul_flops(e)
            continue
        node = _backward_node(e)
        if node is not None and node.name.startswith(_BACKWARD + "torch::autograd::AccumulateGrad"):
            continue
        category = _category(e, forward_category)
        seconds[category] += duration
        flops[category] += _matmul_flops(e)
    seconds["overhead"] = max(0.0, wall - sum(seconds.values()))
    return {"steps": steps, "wall_s": wall, "seconds": dict(seconds), "flops": dict(flops)}


def _matmul_flops(event) -> float:
    """The profiler's FLOP count of a matmul kernel (attention kernels and elementwise ops are
    not counted: the profiler has no formula for the former)."""
    return (getattr(event, "flops", 0) or 0) if event.name in _MATMULS else 0


def _category(event, forward_category: dict[int, str]) -> str:
    """A forward op's nearest labelled scope; a backward op's scope inside its autograd node
    (a fused function labels its parts) or else the category of the node's forward op."""
    e = event
    while e is not None:
        if e.name.startswith(_BACKWARD):
            return forward_category.get(e.sequence_nr, "other")
        if e.name.startswith(PREFIX) and e.name[len(PREFIX) :] in CATEGORIES:
            return e.name[len(PREFIX) :]
        e = e.cpu_parent
    return "other"


def matmul_peak(threads: int | None = None, n: int = 2048, repeats: int = 10) -> float:
    """Best fp32 ``n×n`` CPU matmul rate in GFLOP/s with the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


class StepProfiler:
    """Profiles optimizer steps ``first .. first + count - 1`` (1-based) of a run.

    Usage (the engine's): ``with profiler.step(step_number): run the step``; after the last
    profiled step :meth:`report` returns the breakdown, which is written to ``path`` as JSON.
    """

    def __init__(self, model: torch.nn.Module, count: int, path: Path, first: int = 2):
        self.model, self.count, self.path, self.first = model, count, Path(path), first
        self.events: list = []
        self.profiled = 0
        self.result: dict | None = None
        self.reported = False  # the engine prints the result once

    def wants(self, step_number: int) -> bool:
        return self.result is None and self.first <= step_number < self.first + self.count

    @contextlib.contextmanager
    def step(self, step_number: int):
        """Profile this step when it is one of the profiled ones (else a no-op)."""
        if not self.wants(step_number):
            yield
            return
        activities = [torch.profiler.ProfilerActivity.CPU]
        if any(p.is_cuda for p in self.model.parameters()):
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        hooks = _Hooks(self.model)
        try:
            with torch.profiler.profile(activities=activities, with_flops=True, record_shapes=True) as prof:
                with scope("step"):
                    yield
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
        finally:
            hooks.remove()
        self.events.append(attribute(prof.events()))
        self.profiled += 1
        if self.profiled == self.count:
            self.result = self.report()
            self.path.write_text(json.dumps(self.result, indent=2) + "\n")

    def report(self) -> dict:
        """Mean seconds per step per category, shares of the step, GFLOP/s per category."""
        steps = sum(r["steps"] for r in self.events) or 1
        wall = sum(r["wall_s"] for r in self.events) / steps
        seconds = {c: sum(r["seconds"].get(c, 0.0) for r in self.events) / steps for c in CATEGORIES}
        flops = {c: sum(r["flops"].get(c, 0.0) for r in self.events) / steps for c in CATEGORIES}
        on_cpu = not any(p.is_cuda for p in self.model.parameters())
        peak = matmul_peak() if on_cpu else None
        rows = []
        for c in CATEGORIES:
            gflops = flops[c] / seconds[c] / 1e9 if seconds[c] > 0 and flops[c] else None
            rows.append(
                {
                    "category": c,
                    "label": LABELS[c],
                    "seconds": round(seconds[c], 4),
                    "share": round(seconds[c] / wall, 4) if wall else 0.0,
                    "gflop_per_s": round(gflops, 1) if gflops else None,
                }
            )
        total_flops = sum(flops.values())
        return {
            "profiled_steps": [self.first + i for i in range(self.count)],
            "step_wall_s": round(wall, 4),
            "matmul_gflop": round(total_flops / 1e9, 2),
            "matmul_gflop_per_s": round(total_flops / wall / 1e9, 1) if wall else None,
            "matmul_peak_gflop_per_s": round(peak, 1) if peak else None,
            "threads": torch.get_num_threads(),
            "categories": rows,
            "note": "times include the profiler's own overhead (a few % of the step)",
        }


def format_report(report: dict) -> str:
    """The breakdown as a text table (what ``train --profile`` prints)."""
    lines = [
        f"profile of steps {report['profiled_steps'][0]}-{report['profiled_steps'][-1]}: "
        f"{report['step_wall_s']:.3f} s per step",
        f"{'where':<48}{'s/step':>9}{'share':>8}{'GFLOP/s':>10}",
    ]
    for row in report["categories"]:
        g = f"{row['gflop_per_s']:.1f}" if row["gflop_per_s"] else "-"
        lines.append(f"{row['label']:<48}{row['seconds']:>9.3f}{100 * row['share']:>7.1f}%{g:>10}")
    peak = report.get("matmul_peak_gflop_per_s")
    total = report.get("matmul_gflop_per_s")
    if total:
        tail = f"; fp32 matmul peak {peak:.1f} GFLOP/s ({100 * total / peak:.0f} %)" if peak else ""
        lines.append(f"matmul FLOPs: {report['matmul_gflop']:.1f} GFLOP per step, {total:.1f} GFLOP/s{tail}")
    return "\n".join(lines)
