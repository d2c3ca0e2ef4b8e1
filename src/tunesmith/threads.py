"""How many compute threads a process may use, so that training and inference sharing one
machine do not oversubscribe its cores.

Two torch processes that each start one OpenMP thread per core slow each other down 10-40x on a
small machine (bench/README.md, "A worker and a server on the same cores"): every thread spins
waiting for a core another process holds. The fine-tuning service therefore splits the cores this
process may run on (``os.sched_getaffinity``) between training (the worker's runs) and inference
(the server's generation), and each process keeps to its share. Torch-free: the budget is set
through the environment OpenMP / MKL / OpenBLAS read at start-up (child processes inherit it) and,
when torch is already loaded, ``torch.set_num_threads``.
"""

from __future__ import annotations

import os
import sys

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity; ``os.cpu_count()`` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def service_split(cores: int | None = None) -> tuple[int, int]:
    """``(training threads, inference threads)`` when a worker and a server share ``cores``:
    inference gets a quarter (at least one core), training the rest (at least one); on one core
    both get it. Serving's batched decoding is memory-bound and gains little past a few threads,
    while a training step scales with every core it gets."""
    cores = available_cores() if cores is None else max(1, cores)
    serve = max(1, cores // 4)
    return max(1, cores - serve), serve


def thread_env(threads: int) -> dict[str, str]:
    """The environment variables that cap a (child) process's compute threads at ``threads``."""
    return {name: str(threads) for name in THREAD_ENV}


def use_threads(threads: int) -> None:
    """Cap this process (and the children it starts) at ``threads`` compute threads."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    os.environ.update(thread_env(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
