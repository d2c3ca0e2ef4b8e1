"""Where the K-quant export finds llama.cpp's libllama (tunesmith.export.llama_quantize)."""

from __future__ import annotations

import pytest

from tunesmith.errors import ModelError
from tunesmith.export.llama_quantize import K_QUANTS, find_libllama, quantize


def _bins(root, names):
    folder = root / "node_modules" / "@node-llama-cpp" / "linux-x64" / "bins" / "linux-x64"
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def test_finds_libllama_itself_not_its_neighbours(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNESMITH_LLAMA_CPP_LIB", raising=False)
    monkeypatch.delenv("TUNESMITH_NODE_LLAMA_CPP", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = _bins(
        tmp_path / "tunesmith" / "llama-cpp", ["libllama-common.so", "libllama.v0.5.0.so", "libggml.so"]
    )
    assert find_libllama() == folder / "libllama.v0.5.0.so"
    monkeypatch.setenv("TUNESMITH_LLAMA_CPP_LIB", str(folder))
    assert find_libllama() == folder / "libllama.v0.5.0.so"
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libllama.so").write_bytes(b"")
    monkeypatch.setenv("TUNESMITH_LLAMA_CPP_LIB", str(tmp_path / "lib" / "libllama.so"))
    assert find_libllama() == tmp_path / "lib" / "libllama.so"
    monkeypatch.setenv("TUNESMITH_LLAMA_CPP_LIB", str(tmp_path / "missing"))
    assert find_libllama() is None


def test_unknown_quant_and_missing_library_are_clear_errors(tmp_path, monkeypatch):
    assert {"q4_K_M", "q5_K_M", "q6_K"} <= set(K_QUANTS)
    with pytest.raises(ModelError, match="unknown quant 'q4_k_m'"):
        quantize("a.gguf", "b.gguf", "q4_k_m")
    monkeypatch.setenv("TUNESMITH_LLAMA_CPP_LIB", str(tmp_path))
    with pytest.raises(ModelError, match="npm install --prefix ~/.cache/tunesmith/llama-cpp"):
        quantize("a.gguf", "b.gguf", "q4_K_M")
