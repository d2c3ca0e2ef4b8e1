"""``train.heap`` (models/memory.py): ``compact`` makes large freed blocks leave the process instead
of staying in glibc's heap (the ~0.7 GB bench/memory_bench.py used to find unexplained); ``fast``
keeps them for reuse; ``auto`` chooses between them."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from tunesmith.models import memory
from tunesmith.models.memory import choose_heap, set_heap, static_heap

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# A training step's pattern with the C allocator: one large buffer freed (the first temporary),
# then 32 buffers of 2 MiB alive at once (saved activations), each followed by a small block that
# outlives it, then the large ones freed (end of backward). Prints the bytes malloc then holds
# free (mallinfo2().fordblks).
CHURN = r"""
import ctypes, sys
from tunesmith.models import memory
if sys.argv[1] != "default":
    assert memory.set_heap(sys.argv[1])
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                 "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(8 << 20))
saved, keep = [], []
for i in range(32):
    saved.append(libc.malloc(2 << 20))
    ctypes.memset(saved[-1], 1, 2 << 20)
    keep.append(libc.malloc(64 << 10))
for block in saved:
    libc.free(block)
print(libc.mallinfo2().fordblks)
"""


def _held_free(mode: str) -> int:
    env_clean = {
        k: v
        for k, v in __import__("os").environ.items()
        if k != "MALLOC_MMAP_THRESHOLD_" and "GLIBC_TUNABLES" not in k
    }
    out = subprocess.run(
        [sys.executable, "-c", CHURN, mode], capture_output=True, text=True, env=env_clean, check=True
    )
    return int(out.stdout.split()[-1])


def test_compact_returns_freed_buffers_and_fast_keeps_them():
    # glibc's default: freeing the 8 MiB block raised its (dynamic) threshold to 8 MiB, so the
    # 2 MiB buffers came from the heap and, pinned apart by the small blocks, stay there
    # (32 x 2 MiB = 64 MiB).
    assert _held_free("default") > 60 << 20
    # compact: every buffer of >= 1 MiB is its own mapping and is unmapped on free.
    assert _held_free("compact") < 4 << 20
    # fast: buffers under 32 MiB come from the heap from the start and stay for reuse.
    assert _held_free("fast") > 60 << 20


def test_the_operators_setting_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert set_heap("fast") is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")
    assert set_heap("compact") is False


def test_auto_is_compact_when_the_run_chose_memory_or_memory_is_short():
    gib = 1 << 30
    assert static_heap("auto", quantised=False, checkpointing=False) == "fast"
    assert static_heap("auto", quantised=True, checkpointing=False) == "compact"
    assert static_heap("auto", quantised=False, checkpointing=True) == "compact"
    assert static_heap("fast", quantised=True, checkpointing=True) == "fast"  # the config wins
    assert choose_heap("auto", False, False, 3 * gib, 20 * gib)[0] == "fast"
    assert choose_heap("auto", True, False, None, 20 * gib) == ("compact", "auto: quantised base")
    assert choose_heap("auto", False, True, None, 20 * gib) == ("compact", "auto: gradient checkpointing")
    # over 80 % of what the machine has available: the compact heap, and the reason says so
    heap, why = choose_heap("auto", False, False, 9 * gib, 10 * gib)
    assert heap == "compact" and "available" in why
    assert choose_heap("auto", False, False, 7 * gib, 10 * gib)[0] == "fast"
    assert choose_heap("auto", False, False, None, None)[0] == "fast"  # nothing known: no check
    assert choose_heap("fast", False, False, 9 * gib, 10 * gib)[0] == "fast"  # explicit: as asked
    assert choose_heap("compact", False, False, 1, 10 * gib)[0] == "compact"
    assert memory.available_memory() is None or memory.available_memory() > 0
