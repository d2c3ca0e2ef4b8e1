"""The GGUF computes the same logits as transformers under llama.cpp's conventions.

llama.cpp is not needed: a small numpy decoder reads the tensors *from the GGUF file* by their
llama.cpp names and applies llama.cpp's rules -- the ``llama`` architecture rotates adjacent
pairs (x[2i], x[2i+1]) (GGML_ROPE_TYPE_NORM), ``qwen2`` rotates (x[i], x[i + d/2])
(GGML_ROPE_TYPE_NEOX); GQA, RMSNorm, SwiGLU, tied ``token_embd`` when ``output`` is absent.
If the exporter's Q/K permutation or tensor naming were wrong the logits would not match; the
last check shows the test notices exactly that (NEOX rope on the permuted llama tensors fails).
"""

from __future__ import annotations

import factory
import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")


def _tensors(path):
    reader = gguf.GGUFReader(str(path))
    out = {}
    for t in reader.tensors:
        shape = tuple(int(x) for x in reversed(t.shape))
        out[t.name] = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float64)
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    return out, fields


def _rope(x, pos, base, neox):
    """x: [T, H, D]; llama.cpp rope, NORM (adjacent pairs) or NEOX (split halves)."""
    d = x.shape[-1]
    inv = base ** (-np.arange(0, d, 2) / d)  # [D/2]
    ang = pos[:, None] * inv[None, :]  # [T, D/2]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    if neox:
        a, b = x[..., : d // 2], x[..., d // 2 :]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
    return out


def reference_logits(path, ids, *, neox: bool | None = None):
    w, f = _tensors(path)
    arch = f["general.architecture"]
    neox = (arch == "qwen2") if neox is None else neox
    n_head, n_kv = f[f"{arch}.attention.head_count"], f[f"{arch}.attention.head_count_kv"]
    eps, base = f[f"{arch}.attention.layer_norm_rms_epsilon"], f[f"{arch}.rope.freq_base"]

    def norm(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    def lin(x, name):
        y = x @ w[f"{name}.weight"].T
        return y + w[f"{name}.bias"] if f"{name}.bias" in w else y

    x = w["token_embd.weight"][ids]
    T, pos = len(ids), np.arange(len(ids), dtype=np.float64)
    for i in range(f[f"{arch}.block_count"]):
        p = f"blk.{i}"
        h = norm(x, w[f"{p}.attn_norm.weight"])
        q = lin(h, f"{p}.attn_q").reshape(T, n_head, -1)
        k = lin(h, f"{p}.attn_k").reshape(T, n_kv, -1)
        v = lin(h, f"{p}.attn_v").reshape(T, n_kv, -1)
        q, k = _rope(q, pos, base, neox), _rope(k, pos, base, neox)
        rep = n_head // n_kv
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(q.shape[-1])
        scores = np.where(np.tril(np.ones((T, T), bool)), scores, -np.inf)
        att = np.exp(scores - scores.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        x = x + lin(np.einsum("hts,shd->thd", att, v).reshape(T, -1), f"{p}.attn_output")
        h = norm(x, w[f"{p}.ffn_norm.weight"])
        g = lin(h, f"{p}.ffn_gate")
        x = x + lin(g / (1 + np.exp(-g)) * lin(h, f"{p}.ffn_up"), f"{p}.ffn_down")
    x = norm(x, w["output_norm.weight"])
    return x @ w.get("output.weight", w["token_embd.weight"]).T


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_gguf_forward_matches_transformers(arch, tmp_path, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from tunesmith.export.gguf import write_gguf

    model_dir = tmp_path / arch
    # Larger init than the default 0.02 so attention and rope matter to the logits.
    factory.build_model(
        model_dir,
        arch,
        vocab_size=len(tiny_tokenizer),
        seed=1,
        initializer_range=0.2,
        tie_word_embeddings=arch == "llama",
    )
    tiny_tokenizer.save_pretrained(model_dir)
    path = tmp_path / "m.gguf"
    write_gguf(str(model_dir), str(path), quant="f16")
    ids = tiny_tokenizer.encode("the kettle is hot and the tea is warm", add_special_tokens=False)
    with torch.no_grad():
        expected = (
            AutoModelForCausalLM.from_pretrained(model_dir)
            .float()(torch.tensor([ids]))
            .logits[0]
            .double()
            .numpy()
        )
    got = reference_logits(path, ids)
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() <= 1e-2 * scale  # f16 weights
    if arch != "qwen2":  # the wrong rope convention on the permuted tensors is far off
        wrong = reference_logits(path, ids, neox=True)
        assert np.abs(wrong - expected).max() > 10 * np.abs(got - expected).max()
