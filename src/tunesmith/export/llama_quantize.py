"""K-quants (``q4_K_M`` …) through llama.cpp's own quantiser, ``llama_model_quantize`` in ``libllama``.

The ``gguf`` Python package quantises only the simple block formats (Q8_0, Q4_0 …); its K-quant
classes can dequantise but not quantise. llama.cpp's quantiser also picks the per-tensor mix
that makes ``Q4_K_M`` what Ollama users know (Q6_K for some V and FFN-down tensors, a fallback
type for rows that are not a multiple of 256), so it is driven rather than re-implemented.

``libllama`` comes from the npm package ``@node-llama-cpp/linux-x64`` (prebuilt CPU libraries;
``scripts/setup.sh`` installs it under CI into ``.cache/llama-cpp``), or any llama.cpp build:
:func:`find_libllama` says where it looks. The quantiser runs in a child process
(``python -m tunesmith.export.llama_quantize``) so a crash in native code is an error message,
not the end of ``tunesmith export``.

Only the first two fields of ``llama_model_quantize_params`` are set (``nthread``, ``ftype``;
first in every llama.cpp release since the API exists); the rest keep the library's defaults:
the struct is returned by ``llama_model_quantize_default_params`` into a buffer larger than any
release's struct (returned in memory on x86-64 and arm64 alike), so later fields added by newer
releases are carried through untouched.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys
from pathlib import Path

from ..errors import ModelError

# llama.h ``enum llama_ftype``.
K_QUANTS = {
    "q2_K": 10,
    "q3_K_M": 12,
    "q4_K_S": 14,
    "q4_K_M": 15,
    "q5_K_S": 16,
    "q5_K_M": 17,
    "q6_K": 18,
}

LIB_ENV = "TUNESMITH_LLAMA_CPP_LIB"
INSTALL_HINT = (
    "install llama.cpp's prebuilt libraries with `npm install --prefix ~/.cache/tunesmith/llama-cpp "
    "node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1` (or set "
    f"{LIB_ENV} to a libllama .so/.dylib of any llama.cpp build)"
)


class _Params(ctypes.Structure):
    _fields_ = [("nthread", ctypes.c_int32), ("ftype", ctypes.c_int), ("_rest", ctypes.c_ubyte * 504)]


def _search_roots() -> list[Path]:
    roots = []
    node_entry = os.environ.get("TUNESMITH_NODE_LLAMA_CPP")  # .../node_modules/node-llama-cpp/dist/index.js
    if node_entry:
        roots.append(Path(node_entry).resolve().parents[2])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    roots.append(cache / "tunesmith" / "llama-cpp" / "node_modules")
    roots.append(Path.cwd() / ".cache" / "llama-cpp" / "node_modules")
    roots.append(Path(__file__).resolve().parents[3] / ".cache" / "llama-cpp" / "node_modules")
    return roots


# libllama itself: libllama.so, libllama.so.0, libllama.v0.5.0.so (node-llama-cpp), libllama.dylib;
# not its neighbours such as libllama-common.so.
_LIB_NAME = re.compile(r"^libllama(\.v[\d.]+)?\.(so|dylib)(\.[\d.]+)?$")


def _libllama_in(folder: Path) -> Path | None:
    found = sorted(p for p in folder.glob("libllama*") if _LIB_NAME.match(p.name) and p.is_file())
    return found[0] if found else None


def find_libllama() -> Path | None:
    """``$TUNESMITH_LLAMA_CPP_LIB`` (a file, or a folder holding ``libllama*``), else node-llama-cpp's
    prebuilt ``libllama`` under ``$TUNESMITH_NODE_LLAMA_CPP``'s package tree,
    ``~/.cache/tunesmith/llama-cpp``, ``./.cache/llama-cpp`` or the source checkout's ``.cache``."""
    env = os.environ.get(LIB_ENV)
    if env:
        path = Path(env)
        return _libllama_in(path) if path.is_dir() else path if path.is_file() else None
    for root in _search_roots():
        for folder in sorted(root.glob("@node-llama-cpp/*/bins/*")):
            found = _libllama_in(folder)
            if found is not None:
                return found
    return None


def quantize(src: str, dst: str, quant: str, *, threads: int | None = None) -> str:
    """Quantise the f16/f32 GGUF ``src`` to ``dst`` as ``quant`` (a key of :data:`K_QUANTS`) with
    llama.cpp; returns llama.cpp's summary lines. ModelError when libllama is missing or fails."""
    if quant not in K_QUANTS:
        raise ModelError(f"llama.cpp quantiser: unknown quant {quant!r}; one of {', '.join(K_QUANTS)}")
    lib = find_libllama()
    if lib is None:
        raise ModelError(f"GGUF export --quant {quant} needs llama.cpp's quantiser: {INSTALL_HINT}")
    from ..threads import available_cores

    n = threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or available_cores()
    cmd = [sys.executable, "-m", "tunesmith.export.llama_quantize", str(lib), src, dst, quant, str(n)]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise ModelError(f"llama.cpp ({lib.name}) could not quantise {src} to {quant}:\n{tail}")
    # llama.cpp's closing lines: "model size = … MiB (… BPW)", "quant size = …", fallback warnings.
    keep = ("model size", "quant size", "fallback")
    return "\n".join(
        line.split(": ", 1)[-1] for line in proc.stderr.splitlines() if any(k in line for k in keep)
    )


def _main(argv: list[str]) -> int:
    lib_path, src, dst, quant, threads = argv
    lib = ctypes.CDLL(lib_path)
    lib.llama_model_quantize_default_params.restype = _Params
    lib.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(_Params)]
    lib.llama_model_quantize.restype = ctypes.c_uint32
    params = lib.llama_model_quantize_default_params()
    params.nthread, params.ftype = int(threads), K_QUANTS[quant]
    status = lib.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if status != 0:
        print(f"llama_model_quantize returned {status}", file=sys.stderr)
    return 1 if status else 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
