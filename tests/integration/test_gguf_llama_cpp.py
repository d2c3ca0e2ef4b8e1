"""The exported GGUF runs in llama.cpp and answers like our model.

llama.cpp is reached two ways, each test skipping (with the reason) when its route is absent:

* ``llama-cpp-python`` (``import llama_cpp``): PyPI ships it only as a source package that
  compiles llama.cpp, too slow for this machine, so it is not a tunesmith dependency.
* ``node-llama-cpp``, whose npm package ships llama.cpp's prebuilt CPU libraries:
  ``scripts/setup.sh`` installs it into ``.cache/llama-cpp`` under CI (``CI=true``), or set
  ``TUNESMITH_NODE_LLAMA_CPP`` to its ``dist/index.js``. ``node_llama_cpp_driver/greedy.mjs`` drives it.

Uses the shipped, trained ``models/tunesmith-base`` so greedy choices are decisive rather than
near-ties of a random model. f16 must reproduce transformers' greedy tokens; q8_0 must agree on
the first tokens (8-bit weights may flip a later near-tie); q4_K_M (quantised by llama.cpp's own
``llama_model_quantize`` from node-llama-cpp's ``libllama``) on the first two.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

pytest.importorskip("gguf")

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "models" / "tunesmith-base"
NODE_DRIVER = Path(__file__).resolve().parent / "node_llama_cpp_driver" / "greedy.mjs"
N_NEW = 16
PROMPT = "How do I check disk usage?"


def _agree(quant: str, ref: list[int]) -> int:
    return {"f16": len(ref), "q8_0": min(4, len(ref))}.get(quant, min(2, len(ref)))


@pytest.fixture(scope="module")
def transformers_reference():
    """(prompt text, prompt ids, greedy continuation, stop ids) from transformers."""
    prompt, ids, stops, ref = _greedy_in_transformers(BASE, PROMPT)
    return prompt, ids, ref, stops


def _export(tmp_path: Path, quant: str) -> Path:
    from tunesmith.export.gguf import write_gguf

    path = tmp_path / f"base-{quant}.gguf"
    write_gguf(str(BASE), str(path), quant=quant)
    return path


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_llama_cpp_python_greedy_matches_transformers(tmp_path, quant, transformers_reference):
    llama_cpp = pytest.importorskip("llama_cpp")
    prompt, ids, ref, stops = transformers_reference
    llm = llama_cpp.Llama(
        model_path=str(_export(tmp_path, quant)), n_ctx=256, n_threads=1, verbose=False, logits_all=False
    )
    # Same tokens from the GGUF's own vocabulary, merges and pre-tokenizer (special tokens parsed).
    assert llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True) == ids
    got = []
    for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
        got.append(int(token))
        if len(got) == N_NEW or got[-1] in stops:
            break
    n = _agree(quant, ref)
    assert got[:n] == ref[:n], (got, ref)


def _node_llama_cpp_entry() -> Path | None:
    env = os.environ.get("TUNESMITH_NODE_LLAMA_CPP")
    entry = (
        Path(env)
        if env
        else ROOT / ".cache" / "llama-cpp" / "node_modules" / "node-llama-cpp" / "dist" / "index.js"
    )
    return entry if entry.is_file() else None


def _node_llama_cpp(gguf_path: Path, prompt: str, stops: list[int], texts: list[str] = ()) -> dict:
    """Run the node-llama-cpp driver (skips the test when node or the package is missing)."""
    node, entry = shutil.which("node"), _node_llama_cpp_entry()
    if node is None or entry is None:
        pytest.skip(
            "node-llama-cpp not installed (scripts/setup.sh installs it under CI=true into .cache/llama-cpp)"
        )
    proc = subprocess.run(
        [node, str(NODE_DRIVER), str(entry), str(gguf_path), str(N_NEW)],
        input=json.dumps({"prompt": prompt, "stop": stops, "texts": list(texts)}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("quant", ["f16", "q8_0", "q4_K_M"])
def test_node_llama_cpp_greedy_matches_transformers(tmp_path, quant, transformers_reference):
    prompt, ids, ref, stops = transformers_reference
    if quant == "q4_K_M":
        from tunesmith.export.llama_quantize import find_libllama

        if find_libllama() is None:
            pytest.skip(
                "llama.cpp's libllama not installed (scripts/setup.sh, CI=true, puts it in .cache/llama-cpp)"
            )
    out = _node_llama_cpp(_export(tmp_path, quant), prompt, stops)
    # llama.cpp tokenises with the GGUF's own vocabulary, merges and pre-tokenizer.
    assert out["prompt_ids"] == ids
    n = _agree(quant, ref)
    assert out["generated"][:n] == ref[:n], (out["generated"], ref)
    assert all(0.0 < c <= 1.0 for c in out["confidence"])


# Spaces at the ends, runs of spaces and newlines, characters outside the vocabulary (byte
# fallback: accented letters, CJK, an emoji) and special tokens mid-text.
SPM_TEXTS = [
    "the kettle is hot.",
    "  two leading spaces",
    "trailing space ",
    "tea\n\nkettle  boil",
    "na\u00efve caf\u00e9 \u65e5\u672c \U0001f642",
    "<|im_start|>user\nboil the kettle<|im_end|>\n",
    "Hello World, WHO is there?",
]


def _greedy_in_transformers(
    src: Path, text: str = "boil the kettle"
) -> tuple[str, list[int], list[int], list[int]]:
    """(prompt, its ids, stop ids, N_NEW greedy token ids) for ``text`` from the model folder
    ``src`` in transformers."""
    from tunesmith.models.generate import format_prompt, load_for_inference
    from tunesmith.models.template import stop_token_ids

    model, tok = load_for_inference(str(src))
    prompt = format_prompt(tok, text)
    ids = tok.encode(prompt, add_special_tokens=False)
    stops = stop_token_ids(tok)
    with torch.no_grad():
        ref = model.generate(
            torch.tensor([ids]),
            max_new_tokens=N_NEW,
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=tok.pad_token_id or 0,
        )[0, len(ids) :].tolist()
    return prompt, ids, stops, ref


def _greedy_gaps(src: Path, ids: list[int], generated: list[int]) -> list[float]:
    """For each token of ``generated`` (a greedy continuation of ``ids``), how far its logit in
    transformers falls below the largest one, given the same prefix (0.0: it is the argmax)."""
    from tunesmith.models.generate import load_for_inference

    model, _ = load_for_inference(str(src))
    with torch.no_grad():
        logits = model(torch.tensor([ids + generated])).logits[0, len(ids) - 1 : -1].float()
    chosen = logits.gather(1, torch.tensor(generated)[:, None])[:, 0]
    return (logits.max(dim=1).values - chosen).tolist()


def _merge_order_words(tokenizer_dir: Path, n: int = 12) -> str:
    """Words whose split depends on merge priority: ``a+b+c`` where ``b+c`` is merged before
    ``a+b`` and ``abc`` is no token. Joining leftmost-first (what equal scores would do) splits
    them differently from the merge order, so they check that the exported scores carry it."""
    model = json.loads((tokenizer_dir / "tokenizer.json").read_text())["model"]
    from tunesmith.export.gguf_vocab import merge_pairs

    rank = {m: r for r, m in enumerate(merge_pairs(model))}
    words = [
        a + b + c
        for (b, c), r2 in rank.items()
        for (a, b2), r1 in rank.items()
        if b2 == b and r2 < r1 and a + b + c not in model["vocab"] and "\u2581" not in a + b + c
    ]
    assert len(words) >= n
    return " ".join(words[:n])


def test_node_llama_cpp_sentencepiece_tokenizer(tmp_path):
    """A Mistral-7B-style model (SentencePiece BPE with byte fallback, written as llama.cpp's
    ``llama`` tokenizer with scores): llama.cpp splits text as the HF tokenizer does and its
    greedy continuation equals transformers'."""
    import factory

    from tunesmith.export.gguf import write_gguf

    src = tmp_path / "spm"
    tok = factory.build_spm_tokenizer(src, vocab_size=600)
    # A large init makes the random model's next-token choices decisive (no f16 near-ties).
    factory.build_model(src, "mistral", vocab_size=len(tok), seed=1, initializer_range=0.3)
    report = write_gguf(str(src), str(tmp_path / "spm.gguf"), quant="f16")
    assert report["tokenizer"] == "llama"
    prompt, ids, stops, ref = _greedy_in_transformers(src)
    texts = SPM_TEXTS + [_merge_order_words(src)]
    out = _node_llama_cpp(tmp_path / "spm.gguf", prompt, stops, texts)
    for text, got in zip(texts, out["texts_ids"]):
        assert got == tok.encode(text, add_special_tokens=False), text
    assert out["prompt_ids"] == ids
    assert out["generated"] == ref, (out["generated"], ref)


@pytest.mark.parametrize("arch", ["gemma", "gemma2", "gemma3", "phi3"])
def test_node_llama_cpp_gemma_and_phi3(tmp_path, arch, tiny_tokenizer):
    """Gemma, Gemma 2 (soft-capping, alternating sliding-window layers), Gemma 3 (q/k norms, a
    local and a global rope, five local layers then a global one; 7 layers here so both kinds
    run) and Phi-3 (fused QKV and gate/up) load in llama.cpp, which tokenises as the HF tokenizer and continues greedily as
    transformers does."""
    import factory

    from tunesmith.export.gguf import write_gguf

    # Not named after the family: llama.cpp sets token attributes by model name ("phi3" wants
    # SentencePiece's </s>, which the byte-level test vocabulary does not have).
    src = tmp_path / "model"
    # Gemma and Gemma 2 in llama.cpp always tie the head to the embeddings; Gemma 3 may not.
    overrides = {"tie_word_embeddings": True} if arch in ("gemma", "gemma2") else {}
    if arch in ("gemma2", "gemma3"):
        overrides["sliding_window"] = 8  # shorter than the prompt: the local layers must mask
    if arch == "gemma3":
        overrides["num_hidden_layers"] = 7
        # Bases other than llama.cpp's defaults, so that each must come from the file.
        overrides["rope_parameters"] = {
            "sliding_attention": {"rope_type": "default", "rope_theta": 20.0},
            "full_attention": {"rope_type": "default", "rope_theta": 50000.0},
        }
    factory.build_model(src, arch, vocab_size=len(tiny_tokenizer), seed=1, initializer_range=0.3, **overrides)
    tiny_tokenizer.save_pretrained(src)
    report = write_gguf(str(src), str(tmp_path / "m.gguf"), quant="f16")
    assert report["arch"] == arch
    prompt, ids, stops, ref = _greedy_in_transformers(src)
    out = _node_llama_cpp(tmp_path / "m.gguf", prompt, stops)
    assert out["prompt_ids"] == ids
    gaps = _greedy_gaps(src, ids, out["generated"])
    # Each token llama.cpp picked is transformers' argmax on llama.cpp's own prefix, up to the
    # f16 export's rounding: a near-tie may go the other way on another CPU's kernels (an
    # AVX-512 Xeon flipped Gemma's 7th token), after which the sequences differ legitimately.
    assert len(out["generated"]) == len(ref) and max(gaps) < 0.05, (out["generated"], ref, gaps)
    assert out["generated"][:4] == ref[:4] and sum(g > 0 for g in gaps) <= 2, (gaps, out["generated"], ref)
