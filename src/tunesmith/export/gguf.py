"""Write a merged Hugging Face model folder as a GGUF file for llama.cpp / Ollama, then verify it.

Covers the Llama, Mistral, Qwen2, Gemma, Gemma 2, Gemma 3 (text) and Phi-3 families, with byte-level BPE tokenizers (GPT-2, Llama-3 and
Qwen2 pre-tokenizers) or SentencePiece-style BPE with byte fallback (Llama 2, Mistral 7B; see
:mod:`.gguf_vocab`). Conventions follow llama.cpp's own converter (``convert_hf_to_gguf.py``
and ``conversion/llama.py``, ``conversion/qwen.py`` in the llama.cpp tree):

* Mistral is written as architecture ``llama``; Qwen2 as ``qwen2``; Gemma, Gemma 2, Gemma 3 and
  Phi-3 as ``gemma``, ``gemma2``, ``gemma3``, ``phi3`` (NEOX rope, unpermuted; Gemma's norm
  weights, q/k norms included, + 1, since its RMSNorm scales by 1 + w; Gemma 3's local rope base
  as ``rope.freq_base_swa``; Phi-3's fused ``qkv_proj`` / ``gate_up_proj`` kept fused).
* For ``llama`` the Q and K projection rows are permuted (``permute`` below): Hugging Face
  checkpoints store rotary pairs as (first half, second half) of each head, llama.cpp's ``llama``
  rope kernel expects interleaved pairs, so the converter undoes HF's permutation. Qwen2 uses
  the NEOX (half-split) rope in llama.cpp and is written unpermuted.
* tensor names come from ``gguf.get_tensor_name_map`` (the gguf package's HF -> GGUF map);
  the vocabulary as in ``get_vocab_base``; merges, special ids and the chat template via
  ``gguf.SpecialVocab``; the end-of-turn id as ``tokenizer.ggml.eot_token_id``.
* ``f16``: 2-D weights in float16, 1-D (norms, biases) in float32. ``q8_0``: 2-D weights whose
  rows are a multiple of 32 in Q8_0 (blocks of 32 int8 with one f16 scale), others as for f16.

``verify_gguf`` reads the file back with ``gguf.GGUFReader`` and checks every tensor name and
shape, and every dequantised value against the source within the format's rounding bound:
f16 (10-bit mantissa): |err| <= |w| * 2^-11 + 2^-25; Q8_0 with block scale d = max|w_block|/127:
|err| <= d/2 (rounding to an integer step) + 127 * d * 2^-11 (the scale itself rounded to f16),
checked as 0.6 * d + 1e-7 per block.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .gguf_vocab import added_special_tokens, byte_level_vocab, merge_pairs, spm_vocab, tokenizer_kind
from .llama_quantize import K_QUANTS

ARCHES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "GemmaForCausalLM": "gemma",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3",
    "Phi3ForCausalLM": "phi3",
}
_GEMMAS = ("gemma", "gemma2", "gemma3")
QUANTS = ("f16", "q8_0", *K_QUANTS)
"""f16 / q8_0 are written by the ``gguf`` package; the K-quants by llama.cpp's quantiser from an f16
file written first (:mod:`.llama_quantize`)."""

# Bits per weight value of each lossy block type (the scales come on top), for verify_gguf's bound.
_BITS = {"Q2_K": 2, "Q3_K": 3, "Q4_0": 4, "Q4_1": 4, "Q4_K": 4, "IQ4_NL": 4, "Q5_0": 5, "Q5_1": 5}
_BITS.update({"Q5_K": 5, "Q6_K": 6, "Q8_0": 8})


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotary layout -> llama.cpp's: rows of each head reordered (pairs interleaved).

    ``w``: [n_head * head_dim, in]; within a head, row ``j`` of the first half and row ``j`` of
    the second half become rows ``2j`` and ``2j+1`` (llama.cpp ``LlamaModel.permute``).
    """
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_state(model_dir: Path) -> dict[str, np.ndarray]:
    """Every tensor of the folder's safetensors files as float32 numpy arrays."""
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ModelError(f"{model_dir}: no .safetensors weights")
    state = {}
    for f in files:
        state.update({k: v.float().numpy() for k, v in load_file(str(f)).items()})
    return state


def planned_tensors(model_dir: Path, config: dict) -> list[tuple[str, np.ndarray]]:
    """[(gguf name, float32 array in llama.cpp's layout)] in writing order."""
    import gguf

    arch = ARCHES[config["architectures"][0]]
    n_layers = config["num_hidden_layers"]
    name_map = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.upper()), n_layers)
    n_head = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_head
    out = []
    for hf_name, w in load_state(model_dir).items():
        if hf_name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue  # llama.cpp reuses token_embd when output.weight is absent
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ModelError(f"GGUF export: no llama.cpp name for tensor {hf_name}")
        if arch == "llama" and hf_name.endswith("self_attn.q_proj.weight"):
            w = permute(w, n_head)
        elif arch == "llama" and hf_name.endswith("self_attn.k_proj.weight"):
            w = permute(w, n_kv)
        elif arch in _GEMMAS and hf_name.endswith("norm.weight"):
            w = w + 1.0  # Gemma's RMSNorm scales by (1 + weight); llama.cpp's by weight
        out.append((name, np.ascontiguousarray(w)))
    return out


def _check_supported(src: Path, arch: str, config: dict) -> None:
    """Refuse what llama.cpp's architecture for ``arch`` would compute differently."""
    if arch in ("gemma", "gemma2") and not config.get("tie_word_embeddings", True):
        raise ModelError(
            f"GGUF export: {src} is a {arch} model with an untied lm_head; llama.cpp's {arch} "
            "always reuses the token embeddings as the output layer"
        )
    if arch == "gemma2" and not (
        config.get("attn_logit_softcapping") and config.get("final_logit_softcapping")
    ):
        raise ModelError(f"GGUF export: {src}: llama.cpp's gemma2 always soft-caps; this config turns it off")
    if arch == "gemma3":
        _check_gemma3(src, config)
    if arch in ("gemma2", "gemma3"):
        # llama.cpp scales queries by 1/sqrt(head_dim), by 1/sqrt(hidden/heads) for the 27Bs
        # (46 layers for Gemma 2, 62 for Gemma 3).
        n_head = config["num_attention_heads"]
        big = config["num_hidden_layers"] == (46 if arch == "gemma2" else 62)
        expected = config["hidden_size"] // n_head if big else config["head_dim"]
        if config.get("query_pre_attn_scalar", expected) != expected:
            raise ModelError(
                f"GGUF export: {src} has query_pre_attn_scalar {config['query_pre_attn_scalar']}; "
                f"llama.cpp's {arch} uses {expected} for this shape"
            )


def _check_gemma3(src: Path, config: dict) -> None:
    """llama.cpp's gemma3 has every sixth layer global (layers 5, 11 …), no attention soft-capping."""
    if config.get("attn_logit_softcapping"):
        raise ModelError(f"GGUF export: {src}: llama.cpp's gemma3 has no attention soft-capping")
    n = config["num_hidden_layers"]
    pattern = ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(n)]
    if config.get("layer_types") and list(config["layer_types"]) != pattern:
        raise ModelError(
            f"GGUF export: {src}: layer_types is not Gemma 3's five local layers then one global, "
            "the pattern llama.cpp's gemma3 assumes"
        )


def _add_family_keys(writer, arch: str, config: dict, rope_all: dict) -> None:
    """The metadata llama.cpp reads for Gemma 2 / 3 and Phi-3 beyond the common keys (as its
    ``convert_hf_to_gguf.py`` writes them)."""
    if arch == "gemma3":
        import gguf

        writer.add_sliding_window(config["sliding_window"])
        local = rope_all.get("sliding_attention", {}).get("rope_theta", config.get("rope_local_base_freq"))
        if local is not None:
            writer.add_rope_freq_base_swa(float(local))
        full = rope_all.get("full_attention", rope_all)
        if full.get("rope_type") == "linear":
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(float(full["factor"]))
        if config.get("final_logit_softcapping"):
            writer.add_final_logit_softcapping(config["final_logit_softcapping"])
    elif arch == "gemma2":
        writer.add_attn_logit_softcapping(config["attn_logit_softcapping"])
        writer.add_final_logit_softcapping(config["final_logit_softcapping"])
        writer.add_sliding_window(config["sliding_window"])
    elif arch == "phi3":
        writer.add_rope_scaling_orig_ctx_len(
            config.get("original_max_position_embeddings") or config["max_position_embeddings"]
        )
        writer.add_sliding_window(config.get("sliding_window") or 0)


def _qtype(w: np.ndarray, quant: str):
    import gguf

    if w.ndim == 1:
        return gguf.GGMLQuantizationType.F32
    if quant == "q8_0" and w.shape[-1] % 32 == 0:
        return gguf.GGMLQuantizationType.Q8_0
    return gguf.GGMLQuantizationType.F16


def write_gguf(
    model_dir: str, out_file: str, *, quant: str = "f16", name: str | None = None, threads: int | None = None
) -> dict:
    """Convert the HF folder ``model_dir`` to ``out_file``; returns the verification report.

    A K-quant (``q4_K_M`` …) is an f16 file first (verified), then llama.cpp's quantiser with
    ``threads`` threads, then verified again (names, shapes, metadata, and each tensor's
    dequantised values within :func:`verify_gguf`'s bound for its type). Progress: one task
    whose stages are converting (per tensor), writing, verifying and quantising."""
    from ..progress import TaskProgress

    with TaskProgress(f"GGUF export {Path(out_file).name}") as progress:
        return _write_gguf(model_dir, out_file, quant=quant, name=name, threads=threads, progress=progress)


def _write_gguf(model_dir: str, out_file: str, *, quant: str, name, threads, progress) -> dict:
    import gguf

    from ..models.load import load_tokenizer
    from ..models.template import stop_token_ids

    if quant not in QUANTS:
        raise ModelError(f"GGUF export: quant must be one of {', '.join(QUANTS)}, got {quant!r}")
    src = Path(model_dir)
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    hf_arch = (config.get("architectures") or ["?"])[0]
    if hf_arch not in ARCHES:
        raise ModelError(f"GGUF export supports {', '.join(ARCHES)}; {src} is {hf_arch}")
    rope_all = config.get("rope_parameters") or config.get("rope_scaling") or {}
    # Gemma 3 keeps one rope per attention kind; the global layers' is the model's rope.
    rope = rope_all.get("full_attention", rope_all)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", None) and not (hf_arch == "Gemma3ForCausalLM" and rope_type == "linear"):
        raise ModelError(f"GGUF export: rope scaling {rope_type} is not exported yet")
    arch = ARCHES[hf_arch]
    _check_supported(src, arch, config)
    tokenizer = load_tokenizer(str(src))
    tokenizer_json = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    clean_spaces = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
    kind = tokenizer_kind(tokenizer_json, clean_spaces=clean_spaces)
    vocab_size = config["vocab_size"]
    n_head = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head

    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_name(name or src.name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(config.get("num_key_value_heads") or n_head)
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    rotary = config.get("partial_rotary_factor") or rope.get("partial_rotary_factor") or 1.0
    writer.add_rope_dimension_count(int(rotary * head_dim))
    if head_dim != config["hidden_size"] // n_head or arch in _GEMMAS:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    _add_family_keys(writer, arch, config, rope_all)
    writer.add_vocab_size(vocab_size)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quant == "q8_0" else gguf.LlamaFileType.MOSTLY_F16)

    writer.add_tokenizer_model(kind.model)
    if kind.model == "gpt2":
        tokens, types = byte_level_vocab(tokenizer, vocab_size)
        writer.add_tokenizer_pre(kind.pre)
    else:
        tokens, scores, types = spm_vocab(tokenizer, tokenizer_json, vocab_size)
        writer.add_token_scores(scores)
        writer.add_add_space_prefix(kind.add_space_prefix)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(src, load_merges=kind.model == "gpt2", n_vocab=vocab_size)
    if special.chat_template is None and getattr(tokenizer, "chat_template", None):
        special.chat_template = tokenizer.chat_template
    # Written explicitly: left out, llama.cpp picks a BOS default of its own per pre-tokenizer
    # (on for llama-bpe, say), which need not be what training did.
    adds = added_special_tokens(tokenizer)
    special.add_special_token.update(adds)
    special.add_to_gguf(writer, quiet=True)
    stops = stop_token_ids(tokenizer)
    eot = stops[0] if stops else None
    if eot is not None and "eot" not in special.special_token_ids:
        writer.add_eot_token_id(eot)

    progress.stage("reading the weights")
    expected = planned_tensors(src, config)
    progress.stage("converting tensors", len(expected))
    for tname, w in expected:
        progress.advance()
        qtype = _qtype(w, "q8_0" if quant == "q8_0" else "f16")
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(tname, w.astype(np.float32))
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(tname, w.astype(np.float16))
        else:
            writer.add_tensor(tname, gguf.quants.quantize(w, qtype), raw_dtype=qtype)
    progress.stage("writing")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    merges = [" ".join(m) for m in merge_pairs(tokenizer_json["model"])] if kind.model == "gpt2" else None
    checks = dict(
        tokens=tokens,
        merges=merges,
        pre=kind.pre,
        chat_template=getattr(tokenizer, "chat_template", None),
        eot=eot,
        adds=adds,
    )
    progress.stage("verifying (reading it back)")
    report = verify_gguf(str(tmp), expected, **checks)
    if quant in K_QUANTS:
        from .llama_quantize import quantize

        quantized = out.with_name(out.name + f".{quant}.tmp")
        try:
            progress.stage(f"quantising to {quant} with llama.cpp")
            summary = quantize(str(tmp), str(quantized), quant, threads=threads)
            progress.stage(f"verifying the {quant} file")
            report = verify_gguf(str(quantized), expected, lossy=True, **checks)
        except BaseException:
            quantized.unlink(missing_ok=True)
            raise
        finally:
            tmp.unlink(missing_ok=True)
        report["llama_cpp"] = summary
        tmp = quantized
    tmp.replace(out)
    report.update(
        {
            "file": str(out),
            "quant": quant,
            "arch": arch,
            "tokenizer": kind.model,
            "pre_tokenizer": kind.pre,
            "bytes": out.stat().st_size,
        }
    )
    return report


def _field(reader, key: str):
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def verify_gguf(
    path: str,
    expected: list[tuple[str, np.ndarray]],
    *,
    tokens: list[str] | None = None,
    merges: list[str] | None = None,
    pre: str | None = None,
    chat_template: str | None = None,
    eot: int | None = None,
    adds: dict[str, bool] | None = None,
    lossy: bool = False,
) -> dict:
    """Read ``path`` back; raise ModelError unless names, shapes, values and the given metadata
    (vocabulary, merges as ``"left right"``, pre-tokenizer name, template, ids, BOS/EOS flags) match.

    ``lossy``: the file was quantised by llama.cpp from an f16 file, so every block type (Q8_0
    included, whose input was already rounded to f16) is held to the relative-RMS bound."""
    import gguf

    reader = gguf.GGUFReader(path)
    got = {t.name: t for t in reader.tensors}
    names = [n for n, _ in expected]
    if sorted(got) != sorted(names):
        raise ModelError(
            f"GGUF verification: tensor names differ: missing {sorted(set(names) - set(got))}, "
            f"unexpected {sorted(set(got) - set(names))}"
        )
    worst = {"f16_rel": 0.0, "q8_0_ratio": 0.0, "f32_abs": 0.0}
    types: dict[str, int] = {}
    for name, w in expected:
        t = got[name]
        shape = tuple(int(x) for x in reversed(t.shape))  # GGUF lists dimensions innermost first
        if shape != w.shape:
            raise ModelError(f"GGUF verification: {name} has shape {shape}, expected {w.shape}")
        deq = gguf.quants.dequantize(t.data, t.tensor_type).reshape(w.shape).astype(np.float32)
        err = np.abs(deq - w)
        if t.tensor_type == gguf.GGMLQuantizationType.F32:
            ok, worst["f32_abs"] = bool((err == 0).all()), max(worst["f32_abs"], float(err.max()))
        elif t.tensor_type == gguf.GGMLQuantizationType.F16:
            bound = np.abs(w) * 2.0**-11 + 2.0**-25
            ok = bool((err <= bound).all())
            normal = np.abs(w) >= 2.0**-14  # relative error is meaningful in f16's normal range
            if normal.any():
                worst["f16_rel"] = max(worst["f16_rel"], float((err[normal] / np.abs(w[normal])).max()))
        elif t.tensor_type == gguf.GGMLQuantizationType.Q8_0 and not lossy:
            blocks = w.reshape(-1, 32)
            d = np.abs(blocks).max(axis=1, keepdims=True) / 127
            block_err = err.reshape(-1, 32)
            ok = bool((block_err <= 0.6 * d + 1e-7).all())
            worst["q8_0_ratio"] = max(worst["q8_0_ratio"], float((block_err / (d + 1e-12)).max()))
        elif t.tensor_type.name in _BITS:
            # Lossy block formats (llama.cpp's mixes): relative RMS error within twice that of
            # a uniform b-bit quantiser over a Gaussian block's +-2.1 sigma range, 2.4 / (2^b - 1)
            # (measured on models/tunesmith-base q4_K_M: Q4_K 0.073 vs 0.16, Q6_K 0.018 vs 0.038).
            # A transposed or misnamed tensor is off by ~1.4, far outside.
            rel = float(np.sqrt((err**2).mean()) / max(np.sqrt((w**2).mean()), 1e-12))
            ok = rel <= 2.4 / (2 ** _BITS[t.tensor_type.name] - 1)
            worst["lossy_rel_rms"] = max(worst.get("lossy_rel_rms", 0.0), rel)
        else:
            ok = False
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        if not ok:
            raise ModelError(
                f"GGUF verification: {name} ({t.tensor_type.name}) differs from the source weights "
                f"by up to {float(err.max()):.3g}, beyond the format's rounding bound"
            )
    if tokens is not None:
        stored = _field(reader, "tokenizer.ggml.tokens")
        if list(stored) != tokens:
            raise ModelError("GGUF verification: the stored vocabulary differs from the tokenizer's")
    if merges is not None and list(_field(reader, "tokenizer.ggml.merges") or []) != merges:
        raise ModelError("GGUF verification: the stored merges differ from the tokenizer's")
    if pre is not None and _field(reader, "tokenizer.ggml.pre") != pre:
        raise ModelError(f"GGUF verification: the stored pre-tokenizer is not {pre!r}")
    if chat_template and _field(reader, "tokenizer.chat_template") != chat_template:
        raise ModelError("GGUF verification: the stored chat template differs from the tokenizer's")
    if (
        eot is not None
        and _field(reader, "tokenizer.ggml.eot_token_id") != eot
        and _field(reader, "tokenizer.ggml.eos_token_id") != eot
    ):
        raise ModelError("GGUF verification: the end-of-turn token id is missing")
    for which, value in (adds or {}).items():
        if _field(reader, f"tokenizer.ggml.add_{which}_token") != value:
            raise ModelError(f"GGUF verification: tokenizer.ggml.add_{which}_token is not {value}")
    return {
        "tensors": len(expected),
        "max_f16_relative_error": worst["f16_rel"],
        "max_q8_0_error_in_block_steps": worst["q8_0_ratio"],
        "tensor_types": types,
        **({"max_lossy_relative_rms_error": worst["lossy_rel_rms"]} if "lossy_rel_rms" in worst else {}),
    }
