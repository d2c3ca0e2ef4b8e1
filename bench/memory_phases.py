"""Where a training process's memory goes, phase by phase (diagnostic companion of memory_bench).

Runs ``tunesmith.train`` for one mode of ``memory_bench.py``'s workload in this process, with
the engine's phases labelled by thin wrappers (load, adapter, estimate, forward, backward,
clip, optimizer step, eval, checkpoint, final save) and a sampler thread reading
``/proc/self/status`` (VmRSS split into anonymous and file-backed pages) and glibc's
``mallinfo2`` (heap bytes in use vs. held free by malloc) every few milliseconds. For each
phase it prints the highest RSS seen and how much the process's high-water mark (VmHWM) rose
while the phase ran — the phase that set the peak is the one to look at.

    .venv/bin/python bench/memory_phases.py lora            # or full / qlora
    .venv/bin/python bench/memory_phases.py qlora --steps 1 --glibc-default  # without the heap fix
    .venv/bin/python bench/memory_phases.py --config bench/out/smollm2/runs/tunesmith/config.resolved.yaml \
        --steps 1 --saved-bytes        # one row per forward pass; MALLOC_MMAP_THRESHOLD_=65536 to compare

It uses the assets memory_bench.py builds (``bench/out/memory``; run that first or pass
``--work``), or with ``--config`` any run config (e.g. a bench run's ``config.resolved.yaml``),
trained for ``--steps`` steps into ``WORK/phases-run``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import memory_bench as mb  # noqa: E402


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _Mallinfo2


def status() -> dict:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(rest.split()[0]) * 1024
    m = _libc.mallinfo2()
    out["heap_used"] = m.uordblks + m.hblkhd  # malloc'd and not freed (brk/arena + mmapped chunks)
    out["heap_free"] = m.fordblks  # freed but still held by malloc's arenas
    return out


class Phases:
    def __init__(self) -> None:
        self.name = "start"
        self.rows: dict[str, dict] = {}
        self.order: list[str] = []
        self._stop = False
        self._enter(self.name)
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _enter(self, name: str) -> None:
        s = status()
        if name not in self.rows:
            self.rows[name] = {"hwm_rise": 0, "max_rss": 0, "at_max": {}}
            self.order.append(name)
        self.name, self._hwm0 = name, s["VmHWM"]
        self._note(s)

    def _note(self, s: dict) -> None:
        row = self.rows[self.name]
        if s["VmRSS"] > row["max_rss"]:
            row["max_rss"], row["at_max"] = s["VmRSS"], s
        row["hwm_rise"] = max(row["hwm_rise"], s["VmHWM"] - self._hwm0)

    def set(self, name: str) -> None:
        self._note(status())
        self._enter(name)

    def _sample(self) -> None:
        while not self._stop:
            try:
                self._note(status())
            except KeyError:
                pass
            time.sleep(0.003)

    def report(self) -> list[dict]:
        self._stop = True
        self.thread.join()
        self._note(status())
        return [{"phase": n, **self.rows[n]} for n in self.order]


def wrap(obj, attr: str, phases: Phases, name: str, after: str | None = None) -> None:
    fn = getattr(obj, attr)

    def inner(*a, **k):
        phases.set(name)
        try:
            return fn(*a, **k)
        finally:
            if after:
                phases.set(after)

    setattr(obj, attr, inner)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", nargs="?", choices=["full", "lora", "qlora"])
    ap.add_argument("--config", help="train this run config instead of memory_bench's MODE workload")
    ap.add_argument("--work", default=str(mb.ROOT / "bench" / "out" / "memory"))
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument(
        "--glibc-default",
        action="store_true",
        help="leave glibc's dynamic mmap threshold on (the behaviour before tunesmith fixed it)",
    )
    ap.add_argument(
        "--saved-bytes",
        action="store_true",
        help="also print, per forward pass, the bytes autograd saves for backward (real tensors)",
    )
    args = ap.parse_args()
    if (args.mode is None) == (args.config is None):
        ap.error("give either MODE or --config")
    work = Path(args.work)

    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    import torch
    import transformers  # noqa: F401

    import tunesmith.models.adapters as adapters
    import tunesmith.models.load as load
    import tunesmith.run as run
    from tunesmith.engine.loop import Trainer

    if args.config:
        work.mkdir(parents=True, exist_ok=True)
        config = args.config
        overrides = [
            f"train.max_steps={args.steps}",
            f"output_dir={work / 'phases-run'}",
            "train.save_every=0",
        ]
    else:
        model_dir, data = mb.build_assets(work)
        config, overrides = mb.run_config(work, args.mode, model_dir, data, args.steps), None
    phases = Phases()
    phases.set("imports")
    if args.glibc_default:
        run.memory.set_heap = lambda policy: False
    wrap(load, "load_causal_lm", phases, "load", after="after load")
    wrap(adapters, "attach_adapter", phases, "attach adapter", after="after adapter")
    wrap(run, "apply_heap", phases, "estimate", after="after estimate")
    wrap(run, "save_final", phases, "final save", after="end")
    wrap(torch.nn.utils, "clip_grad_norm_", phases, "clip")
    init = Trainer.__init__
    step_no = {"n": 0, "pass": 0}

    def trainer_init(self, *a, **k):
        init(self, *a, **k)
        # The trainer calls its runner (engine.distributed.LossForward, bare in one process),
        # whose forward calls the method's loss function: wrap that.
        runner = self.runner.module if hasattr(self.runner, "module") else self.runner
        loss_fn = runner.loss_fn
        params = {p.untyped_storage()._cdata for p in self.model.parameters()}

        def loss(*la, **lk):
            # Several forward passes per step (max_tokens_per_forward): one row per pass after the first.
            label = f"{step_no['n']}" + (f" pass {step_no['pass']}" if step_no["pass"] else "")
            phases.set(f"forward {label}")
            if args.saved_bytes and torch.is_grad_enabled():
                saved: dict[int, int] = {}

                def pack(t):
                    storage = t.untyped_storage()
                    if storage._cdata not in params:
                        saved[storage._cdata] = storage.nbytes()
                    return t

                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    out = loss_fn(*la, **lk)
                small = sum(v for v in saved.values() if v < 1 << 20)
                print(
                    f"forward {label}: autograd saved {sum(saved.values()) / 1e6:.0f} MB in {len(saved)} "
                    f"tensors ({small / 1e6:.0f} MB in tensors under 1 MiB)",
                    flush=True,
                )
            else:
                out = loss_fn(*la, **lk)
            phases.set(f"backward {label}" if torch.is_grad_enabled() else f"eval {label}")
            step_no["pass"] += 1
            return out

        runner.loss_fn = loss
        opt_step = self.optimizer.step

        def step(*sa, **sk):
            phases.set(f"optimizer step {step_no['n']}")
            out = opt_step(*sa, **sk)
            phases.set(f"after step {step_no['n']}")
            step_no["n"] += 1
            step_no["pass"] = 0
            return out

        self.optimizer.step = step
        wrap(self, "save", phases, "checkpoint", after="after checkpoint")

    Trainer.__init__ = trainer_init
    try:
        run.train(config, overrides, resume=False)
    finally:
        rows = phases.report()
        _print(rows, work, args.mode or "config")


def _print(rows: list[dict], work: Path, mode: str) -> None:
    gb = lambda n: f"{n / 1e9:6.2f}"  # noqa: E731
    print(
        f"{'phase':22s} {'max RSS':>8s} {'anon':>6s} {'file':>6s} {'heap used':>9s} {'heap free':>9s} "
        f"{'HWM rise':>8s}"
    )
    for r in rows:
        a = r["at_max"]
        print(
            f"{r['phase']:22s} {gb(r['max_rss']):>8s} {gb(a.get('RssAnon', 0))} {gb(a.get('RssFile', 0))} "
            f"{gb(a.get('heap_used', 0)):>9s} {gb(a.get('heap_free', 0)):>9s} {gb(r['hwm_rise']):>8s}"
        )
    print("peak (VmHWM)", gb(status()["VmHWM"]))
    (work / f"phases-{mode}.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
