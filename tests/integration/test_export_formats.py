"""Export end to end from a real (tiny) LoRA run: adapter + card, merged HF folder, GGUF, Modelfile."""

from __future__ import annotations

import json
from pathlib import Path

import factory
import numpy as np
import pytest
import torch

import tunesmith
from tunesmith.cli import main as cli_main
from tunesmith.errors import ModelError

gguf = pytest.importorskip("gguf")

ASSETS = Path(__file__).parent.parent / "assets" / "chat_templates"


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, color_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("export-run")
    tunesmith.train(
        {
            "model": str(tiny_model_dir),
            "data": {"train": str(color_data[0]), "eval": str(color_data[1])},
            "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
            "train": {
                "max_steps": 6,
                "batch_size": 8,
                "max_length": 128,
                "lr": 1e-2,
                "save_every": 0,
                "eval_every": 3,
                "eval_at_start": True,
                "progress": "none",
            },
            "output_dir": str(out),
        }
    )
    return out


def test_adapter_export_has_clean_files_and_a_model_card(run_dir, tmp_path, tiny_model_dir):
    out = tmp_path / "adapter"
    assert cli_main(["export", str(run_dir), "--format", "adapter", "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md"} <= names
    assert not any("optimizer" in n or n.startswith("checkpoint") for n in names)
    card = (out / "README.md").read_text()
    info = json.loads((run_dir / "run.json").read_text())
    evals = [
        json.loads(x)["eval_loss"]
        for x in (run_dir / "metrics.jsonl").read_text().splitlines()
        if "eval_loss" in json.loads(x)
    ]
    # the base is named (here the folder's name), not by a local path
    assert f"base_model: {tiny_model_dir.name}\n" in card and "library_name: peft" in card
    assert str(tiny_model_dir) not in card
    assert info["data_fingerprint"] in card and "| method | sft |" in card
    assert f"| eval_loss_last | {evals[-1]:.4f} |" in card and f"| eval_loss_first | {evals[0]:.4f} |" in card
    assert "lr: 0.01" in card and "r: 4" in card
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out))  # loads cleanly


def test_hf_export_is_merged_verified_and_carries_template_and_stops(run_dir, tmp_path, tiny_tokenizer):
    out = tmp_path / "hf"
    assert cli_main(["export", str(run_dir), "--format", "hf", "--out", str(out)]) == 0
    report = json.loads((out / "export_report.json").read_text())
    assert report["max_abs_diff"] <= 1e-3 and report["adapter"]
    gen = json.loads((out / "generation_config.json").read_text())
    im_end = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in gen["eos_token_id"]
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(out).chat_template == tiny_tokenizer.chat_template
    assert not (out / "adapter_config.json").exists()
    # a full model folder re-exports too (verified by reloading)
    again = tmp_path / "hf2"
    assert cli_main(["export", str(out), "--format", "hf", "--out", str(again)]) == 0
    assert json.loads((again / "export_report.json").read_text())["max_abs_diff"] == 0.0


def test_permute_matches_llama_cpp_layout_by_hand():
    # one head, head_dim 4: HF rows (a0, a1 | b0, b1) -> llama.cpp interleaved (a0, b0, a1, b1)
    from tunesmith.export.gguf import permute

    w = np.arange(8, dtype=np.float32).reshape(4, 2)  # rows r0..r3
    assert permute(w, 1).tolist() == [[0, 1], [4, 5], [2, 3], [6, 7]]
    # two heads, head_dim 4: each head permuted on its own
    w = np.arange(8, dtype=np.float32).reshape(8, 1)
    assert permute(w, 2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_gguf_export_reads_back_within_tolerance(run_dir, tmp_path, quant, tiny_tokenizer):
    out = tmp_path / "gguf"
    assert cli_main(["export", str(run_dir), "--format", "gguf", "--quant", quant, "--out", str(out)]) == 0
    report = json.loads((out / "export_report.json").read_text())
    path = Path(report["gguf"]["file"])
    assert path.name == f"{run_dir.name}-{quant}.gguf" and path.is_file()
    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert fields["general.architecture"] == "llama"
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert fields["tokenizer.chat_template"] == tiny_tokenizer.chat_template
    assert fields["tokenizer.ggml.eot_token_id"] == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert fields["llama.block_count"] == 2 and fields["llama.attention.head_count_kv"] == 2
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert types["blk.0.attn_q.weight"] == ("F16" if quant == "f16" else "Q8_0")
    # The q projection is stored permuted: undoing it gives the merged HF weights back.
    with torch.no_grad():
        merged_q = _merged_q(run_dir, tmp_path)
    t = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    stored = gguf.quants.dequantize(t.data, t.tensor_type).reshape(merged_q.shape)
    n_head, hd = 4, merged_q.shape[0] // 4
    unpermuted = stored.reshape(n_head, hd // 2, 2, -1).swapaxes(1, 2).reshape(merged_q.shape)
    tol = 2e-3 if quant == "f16" else np.abs(merged_q).max() / 127
    assert np.abs(unpermuted - merged_q).max() <= tol
    # Named after the GGUF it was written for: a second quant into the same folder keeps both.
    assert report["modelfile"] == str(out / f"{run_dir.name}-{quant}.Modelfile")
    modelfile = Path(report["modelfile"]).read_text()
    assert modelfile.startswith(f"FROM ./{path.name}\n")
    assert 'PARAMETER stop "<|im_end|>"' in modelfile


def _merged_q(run_dir, tmp_path) -> np.ndarray:
    from tunesmith.export.merge import merge_adapter

    merged = tmp_path / "merged-ref"
    if not merged.exists():
        merge_adapter(str(run_dir), str(merged))
    from safetensors.torch import load_file

    return (
        load_file(str(merged / "model.safetensors"))["model.layers.0.self_attn.q_proj.weight"].float().numpy()
    )


def test_gguf_verification_rejects_wrong_values(tiny_model_dir, tmp_path):
    from tunesmith.export.gguf import planned_tensors, verify_gguf, write_gguf

    path = tmp_path / "m.gguf"
    write_gguf(str(tiny_model_dir), str(path), quant="q8_0")
    config = json.loads((tiny_model_dir / "config.json").read_text())
    expected = planned_tensors(tiny_model_dir, config)
    verify_gguf(str(path), expected)
    name, w = expected[3]
    tampered = list(expected)
    tampered[3] = (name, w + np.abs(w).max() / 40)  # ~3 quantisation steps off
    with pytest.raises(ModelError, match="beyond the format's rounding bound"):
        verify_gguf(str(path), tampered)
    with pytest.raises(ModelError, match="tensor names differ"):
        verify_gguf(str(path), expected[:-1])


@pytest.mark.parametrize("arch,gguf_arch", [("qwen2", "qwen2"), ("mistral", "llama")])
def test_gguf_other_families(arch, gguf_arch, tmp_path, tiny_tokenizer):
    from tunesmith.export.gguf import write_gguf

    model_dir = tmp_path / arch
    factory.build_model(model_dir, arch, vocab_size=len(tiny_tokenizer))
    tiny_tokenizer.save_pretrained(model_dir)
    report = write_gguf(str(model_dir), str(tmp_path / "m.gguf"), quant="f16")
    assert report["arch"] == gguf_arch
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    names = {t.name for t in reader.tensors}
    assert ("blk.0.attn_q.bias" in names) == (arch == "qwen2")
    assert "output.weight" in names  # untied head


def test_unsupported_architecture_is_a_clear_error(tmp_path, tiny_tokenizer):
    from tunesmith.export.gguf import write_gguf

    factory.build_model(tmp_path, "qwen3", vocab_size=len(tiny_tokenizer))
    with pytest.raises(ModelError, match="GGUF export supports"):
        write_gguf(str(tmp_path), str(tmp_path / "x.gguf"))


def test_ollama_template_reproduces_training_templates(tiny_tokenizer):
    from tunesmith.export.ollama import go_template, measure_template

    parts = measure_template(tiny_tokenizer)
    assert go_template(parts) == (
        '{{ range .Messages }}{{ if eq .Role "system" }}<|im_start|>system\n{{ .Content }}<|im_end|>\n'
        '{{ else if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
        '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n{{ .Content }}<|im_end|>\n'
        "{{ end }}{{ end }}<|im_start|>assistant\n"
    )
    conv = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "again"},
    ]
    tok = tiny_tokenizer
    for name in ("qwen2_5.jinja", "llama3.jinja"):  # both insert a default system turn
        saved = tok.chat_template
        tok.chat_template = (ASSETS / name).read_text()
        try:
            parts = measure_template(tok)
            assert parts.default_system is not None
            assert parts.render(conv, True) == tok.apply_chat_template(
                conv, tokenize=False, add_generation_prompt=True
            )
            assert '{{ if ne (index .Messages 0).Role "system" }}' in go_template(parts)
        finally:
            tok.chat_template = saved


def test_ollama_refuses_templates_it_cannot_express(tiny_tokenizer):
    from tunesmith.export.ollama import measure_template

    saved = tiny_tokenizer.chat_template
    tiny_tokenizer.chat_template = (ASSETS / "mistral_v03.jinja").read_text()
    try:
        with pytest.raises(ModelError):
            measure_template(tiny_tokenizer)
    finally:
        tiny_tokenizer.chat_template = saved


def test_k_quant_without_llama_cpp_is_a_clear_error(tmp_path, monkeypatch, tiny_model_dir):
    from tunesmith.export.gguf import write_gguf

    monkeypatch.setenv("TUNESMITH_LLAMA_CPP_LIB", str(tmp_path))  # a folder with no libllama
    with pytest.raises(ModelError, match="needs llama.cpp's quantiser: install .*npm install"):
        write_gguf(str(tiny_model_dir), str(tmp_path / "m.gguf"), quant="q4_K_M")
    assert not list(tmp_path.glob("*.gguf*"))  # nothing half-written left behind


def test_k_quant_export_is_llama_cpps_mix_and_verified(tmp_path):
    """q4_K_M through llama.cpp's quantiser: Q4_K for the 256-wide matrices, its Q6_K / fallback
    choices elsewhere, every tensor read back within its type's bound; a tensor whose values were
    swapped for another's is caught."""
    from tunesmith.export.gguf import planned_tensors, verify_gguf, write_gguf
    from tunesmith.export.llama_quantize import find_libllama

    if find_libllama() is None:
        pytest.skip(
            "llama.cpp's libllama not installed (scripts/setup.sh, CI=true, puts it in .cache/llama-cpp)"
        )
    base = Path(__file__).resolve().parents[2] / "models" / "tunesmith-base"
    path = tmp_path / "base-q4_K_M.gguf"
    report = write_gguf(str(base), str(path), quant="q4_K_M", threads=1)
    assert report["tensor_types"]["Q4_K"] >= 30 and "Q6_K" in report["tensor_types"]
    assert 0 < report["max_lossy_relative_rms_error"] < 0.16
    assert "quant size" in report["llama_cpp"]
    assert path.stat().st_size < 0.4 * 16_284_256  # vs the f16 file
    expected = planned_tensors(base, json.loads((base / "config.json").read_text()))
    names = [n for n, _ in expected]
    q, k = names.index("blk.0.attn_q.weight"), names.index("blk.0.attn_output.weight")
    swapped = list(expected)
    swapped[q] = (expected[q][0], expected[k][1])  # same shape, other values
    with pytest.raises(ModelError, match="beyond the format's rounding bound"):
        verify_gguf(str(path), swapped, lossy=True)


@pytest.mark.parametrize(
    "arch,overrides,message",
    [
        ("gemma2", {"tie_word_embeddings": False}, "untied lm_head; llama.cpp's gemma2 always reuses"),
        ("gemma2", {"tie_word_embeddings": True, "query_pre_attn_scalar": 32}, "query_pre_attn_scalar 32"),
        ("gemma3", {"attn_logit_softcapping": 50.0}, "gemma3 has no attention soft-capping"),
        (
            "gemma3",
            {"num_hidden_layers": 2, "layer_types": ["full_attention", "sliding_attention"]},
            "five local layers then one global",
        ),
    ],
)
def test_gemma_exports_refuse_what_llama_cpp_computes_differently(
    arch, overrides, message, tmp_path, tiny_tokenizer
):
    from tunesmith.export.gguf import write_gguf

    factory.build_model(tmp_path, arch, vocab_size=len(tiny_tokenizer), **overrides)
    tiny_tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ModelError, match=message):
        write_gguf(str(tmp_path), str(tmp_path / "x.gguf"))
