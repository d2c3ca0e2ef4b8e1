"""The exported GGUF runs in llama.cpp and answers like our model.

llama.cpp is reached two ways, each test skipping (with the reason) when its route is absent:

* ``llama-cpp-python`` (``import llama_cpp``): PyPI ships it only as a source package that
  compiles llama.cpp, too slow for this machine, so it is not a tunesmith dependency.
* ``node-llama-cpp``, whose npm package ships llama.cpp's prebuilt CPU libraries:
  ``scripts/setup.sh`` installs it into ``.cache/llama-cpp`` under CI (``CI=true``), or set
  ``TUNESMITH_NODE_LLAMA_CPP`` to its ``dist/index.js``. ``node_llama_cpp_driver/greedy.mjs`` drives it.

Uses the shipped, trained ``models/tunesmith-base`` so greedy choices are decisive rather than
near-ties of a random model. f16 must reproduce transformers' greedy tokens; q8_0 must agree on
the first tokens (8-bit weights may flip a later near-tie).
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
    return len(ref) if quant == "f16" else min(4, len(ref))


@pytest.fixture(scope="module")
def transformers_reference():
    """(prompt text, prompt ids, greedy continuation, stop ids) from transformers."""
    from tunesmith.models.generate import format_prompt, load_for_inference
    from tunesmith.models.template import stop_token_ids

    model, tok = load_for_inference(str(BASE))
    prompt = format_prompt(tok, PROMPT)
    ids = tok.encode(prompt, add_special_tokens=False)
    stops = stop_token_ids(tok)
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids]), max_new_tokens=N_NEW, do_sample=False, eos_token_id=stops,
                             pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
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
    llm = llama_cpp.Llama(model_path=str(_export(tmp_path, quant)), n_ctx=256, n_threads=1, verbose=False,
                          logits_all=False)
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
    entry = Path(env) if env else ROOT / ".cache" / "llama-cpp" / "node_modules" / "node-llama-cpp" / "dist" / "index.js"
    return entry if entry.is_file() else None


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_node_llama_cpp_greedy_matches_transformers(tmp_path, quant, transformers_reference):
    node, entry = shutil.which("node"), _node_llama_cpp_entry()
    if node is None or entry is None:
        pytest.skip("node-llama-cpp not installed (scripts/setup.sh installs it under CI=true into .cache/llama-cpp)")
    prompt, ids, ref, stops = transformers_reference
    path = _export(tmp_path, quant)
    proc = subprocess.run([node, str(NODE_DRIVER), str(entry), str(path), str(N_NEW)],
                          input=json.dumps({"prompt": prompt, "stop": stops}), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # llama.cpp tokenises with the GGUF's own vocabulary, merges and pre-tokenizer.
    assert out["prompt_ids"] == ids
    n = _agree(quant, ref)
    assert out["generated"][:n] == ref[:n], (out["generated"], ref)
    assert all(0.0 < c <= 1.0 for c in out["confidence"])
