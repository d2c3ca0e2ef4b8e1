"""GGUF out, checked on the real vocabulary: the tuned SmolLM2 (``smollm2_lora_run``) exported with
``tunesmith export RUN --format gguf`` (f16 and q8_0, one export each, shared by the module) and
loaded in llama.cpp through node-llama-cpp (one process per GGUF; see
``tests/integration/test_gguf_llama_cpp.py`` for the route):

* llama.cpp tokenises chat prompts and edge-case texts (runs of spaces, newlines, long numbers,
  accents, CJK, emoji, special tokens mid-text) exactly as the run's transformers tokenizer;
* its greedy continuation equals transformers' (base + adapter merged, fp32) for 16 tokens in f16,
  and on the first tokens in q8_0 (8-bit weights may flip a later near-tie);
* the Modelfile's TEMPLATE, executed with Go template semantics, renders conversations with and
  without a system message exactly as SmolLM2's Jinja template (which inserts its default system
  prompt when there is none);
* SmolLM2's published pre-tokenizer (each digit alone, then GPT-2's split) is written as llama.cpp's
  ``smollm`` and splits the real vocabulary as transformers does.

Without node-llama-cpp the llama.cpp checks skip outside CI and fail under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

pytest.importorskip("gguf")

ROOT = Path(__file__).resolve().parents[2]
NODE_DRIVER = ROOT / "tests" / "integration" / "node_llama_cpp_driver" / "greedy.mjs"
QUANTS = ("f16", "q8_0")
N_NEW = 16
Q8_AGREE = 4
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# Greedy prompts: one without a system message (the template inserts its default one), one with.
# Both continue for 16 tokens without ending the turn, with clear top-1 margins in fp32.
CHATS = [
    [{"role": "user", "content": "Count from 1 to 30, separated by commas."}],
    [
        {"role": "system", "content": "You are Zephyr Help."},
        {"role": "user", "content": "What is the warranty of the Zephyr Q3?"},
    ],
]
TEXTS = [
    "the kettle is hot.",
    "  two leading spaces",
    "trailing space ",
    "tea\n\nkettle  boil\n",
    "a   b    c\t\td \n \n  e",
    "costs 142.50 euros, call 0123456789 or 3.14159265358979",
    "x  12345",
    "a\n\n  7 and  2024-06-01",
    "na\u00efve caf\u00e9 r\u00e9sum\u00e9 \u00c6r\u00f8sk\u00f8bing",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \u4e2d\u6587",
    "emoji \U0001f642\U0001f44d\U0001f3fd and \U0001f1eb\U0001f1f7",
    "<|im_start|>user\nboil the kettle<|im_end|>\n",
    "text<|im_end|>mid<|im_start|>assistant\nok",
    "Hello World, WHO is there? I'm sure it's fine; they'll've",
    "<|endoftext|>",
]


def _node_llama_cpp_entry() -> Path | None:
    env = os.environ.get("TUNESMITH_NODE_LLAMA_CPP")
    entry = Path(env) if env else ROOT / ".cache/llama-cpp/node_modules/node-llama-cpp/dist/index.js"
    return entry if entry.is_file() else None


def _node_llama_cpp() -> tuple[str, Path]:
    """(node, node-llama-cpp's entry point); skips the test where they are missing, fails in CI."""
    node, entry = shutil.which("node"), _node_llama_cpp_entry()
    if node is None or entry is None:
        reason = (
            "node-llama-cpp not installed (scripts/setup.sh installs it under CI=true into .cache/llama-cpp)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return node, entry


def _node_llama_cpp_start(gguf_path: Path, prompts: list[str], stops: list[int], texts: list[str]):
    """Start one node-llama-cpp process for ``gguf_path`` (greedy runs for ``prompts``, ``texts``
    tokenised); :func:`_node_llama_cpp_result` collects it."""
    node, entry = _node_llama_cpp()
    proc = subprocess.Popen(
        [node, str(NODE_DRIVER), str(entry), str(gguf_path), str(N_NEW)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdin.write(
        json.dumps({"prompts": prompts, "stop": stops, "texts": texts})
    )  # a few kB: never blocks
    proc.stdin.close()
    proc.stdin = None  # so that communicate() only reads
    return proc


def _node_llama_cpp_result(proc) -> dict:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def exports(smollm2_lora_run, tmp_path_factory, fork_trainer) -> dict[str, dict]:
    """``tunesmith export RUN --format gguf --quant Q`` for f16 and q8_0 (q8_0 in a second process,
    forked from the warm ``fork_trainer``, at the same time): ``{quant: {"report", "gguf",
    "modelfile"}}``."""
    from tunesmith.cli import main as cli_main

    out = tmp_path_factory.mktemp("smollm2-gguf")
    args = {
        q: ["export", str(smollm2_lora_run), "--format", "gguf", "--quant", q, "--out", str(out / q)]
        for q in QUANTS
    }
    fork_trainer.start(args["q8_0"], out / "q8_0.log")
    try:
        assert cli_main(args["f16"]) == 0
    finally:
        rc = fork_trainer.wait()
    assert rc == 0, (out / "q8_0.log").read_text()[-3000:]
    result = {}
    for q in QUANTS:
        report = json.loads((out / q / "export_report.json").read_text())
        result[q] = {
            "report": report,
            "gguf": Path(report["gguf"]["file"]),
            "modelfile": Path(report["modelfile"]).read_text(encoding="utf-8"),
        }
    return result


@pytest.fixture(scope="module")
def reference(smollm2_lora_run):
    """(tokenizer, stop ids, [(prompt text, prompt ids, greedy ids, top-1 margins)]) from
    transformers: base + adapter merged, fp32."""
    from tunesmith.models.generate import load_for_inference
    from tunesmith.models.template import stop_token_ids

    model, tok = load_for_inference(str(smollm2_lora_run))
    model = model.merge_and_unload().eval()
    stops = stop_token_ids(tok)
    runs = []
    for chat in CHATS:
        prompt = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        ids = tok.encode(prompt, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                torch.tensor([ids]),
                max_new_tokens=N_NEW,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=tok.pad_token_id,
                output_scores=True,
                return_dict_in_generate=True,
            )
        top2 = [torch.log_softmax(s[0].float(), -1).topk(2).values for s in out.scores]
        runs.append(
            (prompt, ids, out.sequences[0, len(ids) :].tolist(), [round(float(a - b), 3) for a, b in top2])
        )
    return tok, stops, runs


@pytest.fixture(scope="module")
def llama_cpp(exports, reference) -> dict[str, dict]:
    """node-llama-cpp's answers for each exported file (both processes at once)."""
    _, stops, runs = reference
    prompts = [prompt for prompt, *_ in runs]
    procs = {q: _node_llama_cpp_start(exports[q]["gguf"], prompts, stops, TEXTS + prompts) for q in QUANTS}
    return {q: _node_llama_cpp_result(proc) for q, proc in procs.items()}


def test_export_writes_the_tokenizer_llama_cpp_needs(exports, smollm2_lora_run):
    from tunesmith.export.gguf_vocab import pre_tokenizer_name

    tokenizer_json = json.loads((smollm2_lora_run / "final" / "tokenizer.json").read_text(encoding="utf-8"))
    for q in QUANTS:
        g = exports[q]["report"]["gguf"]
        assert (g["arch"], g["tokenizer"], g["quant"]) == ("llama", "gpt2", q)
        # named from the run's own tokenizer.json (the split it trained with), and read back
        assert g["pre_tokenizer"] == pre_tokenizer_name(tokenizer_json)
        assert exports[q]["gguf"].name == f"{smollm2_lora_run.name}-{q}.gguf"
    assert exports["f16"]["report"]["merge"]["max_abs_diff"] <= 1e-3


@pytest.mark.parametrize("quant", QUANTS)
def test_llama_cpp_tokenises_like_transformers(llama_cpp, reference, quant):
    tok, _, runs = reference
    texts = TEXTS + [prompt for prompt, *_ in runs]
    out = llama_cpp[quant]
    for text, got in zip(texts, out["texts_ids"], strict=True):
        assert got == tok.encode(text, add_special_tokens=False), text
    for (_, ids, _, _), run in zip(runs, out["runs"], strict=True):
        assert run["prompt_ids"] == ids


def test_llama_cpp_f16_greedy_equals_transformers_for_16_tokens(llama_cpp, reference):
    _, _, runs = reference
    for (prompt, _, ref, margins), run in zip(runs, llama_cpp["f16"]["runs"], strict=True):
        assert len(ref) == N_NEW, f"the reference ended its turn early: {ref}"
        assert run["generated"] == ref, (prompt, run["generated"], ref, margins)
        assert all(0.0 < c <= 1.0 for c in run["confidence"])


def test_llama_cpp_q8_0_greedy_agrees_on_the_first_tokens(llama_cpp, reference):
    _, _, runs = reference
    for (prompt, _, ref, margins), run in zip(runs, llama_cpp["q8_0"]["runs"], strict=True):
        assert run["generated"][:Q8_AGREE] == ref[:Q8_AGREE], (prompt, run["generated"], ref, margins)


def test_modelfile_template_renders_like_the_jinja_template(exports, smollm2_tokenizer):
    from tunesmith.export.ollama import render_go_template

    text = exports["f16"]["modelfile"]
    assert text.startswith(f"FROM ./{exports['f16']['gguf'].name}\n")
    assert 'PARAMETER stop "<|im_end|>"' in text
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M).group(1)
    user = {"role": "user", "content": "What is the price of the Zephyr Q3?"}
    reply = {"role": "assistant", "content": "It costs 142.50 euros.\n - Zephyr Help"}
    again = {"role": "user", "content": "and  in 2 colours?  \U0001f642"}
    conversations = {
        "no system": [user],
        "no system, three turns": [user, reply, again],
        "system": [{"role": "system", "content": "You are Zephyr Help."}, user],
        "system, three turns": [{"role": "system", "content": "Be brief."}, user, reply, again],
        "empty system": [{"role": "system", "content": ""}, user],
    }
    for name, messages in conversations.items():
        want = smollm2_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        got = render_go_template(template, messages)
        assert got == want, name
        # SmolLM2's rule: its default system prompt exactly when no system message is given,
        # rendered as if it had been given
        assert (DEFAULT_SYSTEM in got) == (messages[0]["role"] != "system"), name
        if messages[0]["role"] != "system":
            given = [{"role": "system", "content": DEFAULT_SYSTEM}] + messages
            assert got == render_go_template(template, given), name


def test_smollm2_published_pre_tokenizer_is_written_as_smollm(smollm2_lora_run, tmp_path):
    """SmolLM2's own tokenizer.json splits each digit off before GPT-2's regex; that is llama.cpp's
    ``smollm``. Checked on the real 49,152-token vocabulary (a tiny random model carries it)."""
    import factory
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from tunesmith.export.gguf import write_gguf

    _node_llama_cpp()  # before the work, which only llama.cpp can judge
    src = tmp_path / "digits"
    src.mkdir()
    for f in (smollm2_lora_run / "final").iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(f, src / f.name)
    tj = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tj["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level],
    }
    (src / "tokenizer.json").write_text(json.dumps(tj), encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(src)
    factory.build_model(src, "llama", vocab_size=len(tok), tie_word_embeddings=True)
    report = write_gguf(str(src), str(tmp_path / "digits.gguf"), quant="f16")
    assert report["pre_tokenizer"] == "smollm"
    plain = Tokenizer.from_str(json.dumps(dict(tj, pre_tokenizer=byte_level)))  # GPT-2's split alone
    assert any(
        tok.encode(t, add_special_tokens=False) != plain.encode(t, add_special_tokens=False).ids
        for t in TEXTS
    ), "no text tells the two splits apart"
    out = _node_llama_cpp_result(_node_llama_cpp_start(tmp_path / "digits.gguf", [], [], TEXTS))
    for text, got in zip(TEXTS, out["texts_ids"], strict=True):
        assert got == tok.encode(text, add_special_tokens=False), text
