"""The exported GGUF runs in llama.cpp (llama-cpp-python) and answers like our model.

Skipped unless ``llama_cpp`` is importable (llama-cpp-python ships as a source package that
compiles llama.cpp; it is not a tunesmith dependency). Uses the shipped, trained
``models/tunesmith-base`` so greedy choices are decisive rather than near-ties of a random model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

llama_cpp = pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

BASE = Path(__file__).resolve().parents[2] / "models" / "tunesmith-base"
N_NEW = 16


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_llama_cpp_greedy_matches_transformers(tmp_path, quant):
    from tunesmith.export.gguf import write_gguf
    from tunesmith.models.generate import format_prompt, load_for_inference

    path = tmp_path / f"base-{quant}.gguf"
    write_gguf(str(BASE), str(path), quant=quant)
    model, tok = load_for_inference(str(BASE))
    prompt = format_prompt(tok, "How do I check disk usage?")
    ids = tok.encode(prompt, add_special_tokens=False)

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=1, verbose=False, logits_all=False)
    # Same tokens from the GGUF's own vocabulary, merges and pre-tokenizer (special tokens parsed).
    assert llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True) == ids

    from tunesmith.models.template import stop_token_ids

    stops = stop_token_ids(tok)
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids]), max_new_tokens=N_NEW, do_sample=False, eos_token_id=stops,
                             pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
    got = []
    for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
        got.append(int(token))
        if len(got) == N_NEW or got[-1] in stops:
            break
    # f16 reproduces the greedy path; q8_0 must agree on the first tokens at least.
    agree = len(ref) if quant == "f16" else min(4, len(ref))
    assert got[:agree] == ref[:agree], (got, ref)
