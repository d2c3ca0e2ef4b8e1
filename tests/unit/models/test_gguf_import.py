"""A model named by a GGUF file (tunesmith.models.gguf_import), on tiny files built here.

The valid file is the session's tiny Llama written by tunesmith's own GGUF export (f16); the bad
ones are copies of it with one thing changed (architecture, tokenizer model), cut short, or not
GGUF at all. Every bad file must give ``tunesmith import`` exit code 2 with one line naming the
file and the reason, and leave nothing in the cache that a later run could take for an entry.
"""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

gguf = pytest.importorskip("gguf")

from tunesmith.cli import main  # noqa: E402
from tunesmith.models import gguf_import  # noqa: E402
from tunesmith.models.gguf_import import SOURCE_FILE, cache_entry, import_gguf, source_of  # noqa: E402

# ---- files ---------------------------------------------------------------------------------------


def rewrite(src: Path, dst: Path, *, arch: str | None = None, fields: dict | None = None) -> Path:
    """Copy the GGUF ``src`` to ``dst`` with another architecture and/or changed metadata values
    (tensors byte for byte; with no change the copy is byte-identical)."""
    reader = gguf.GGUFReader(str(src))
    old_arch = str(reader.fields["general.architecture"].contents())
    arch = arch or old_arch
    fields = dict(fields or {})
    writer = gguf.GGUFWriter(str(dst), arch)
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        name = field.name.replace(f"{old_arch}.", f"{arch}.", 1)
        writer.add_key_value(name, fields.pop(field.name, field.contents()), vtype, sub_type=sub)
    assert not fields, f"no such fields in {src}: {sorted(fields)}"
    for t in reader.tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(t.data)
    writer.close()
    return dst


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny Llama (byte-level BPE, ChatML) as an f16 GGUF file."""
    from tunesmith.export.gguf import write_gguf

    out = tmp_path_factory.mktemp("gguf") / "tiny-llama.f16.gguf"
    write_gguf(str(tiny_model_dir), str(out), quant="f16")
    return out


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh tunesmith cache for each test."""
    root = tmp_path / "cache"
    monkeypatch.setenv("TUNESMITH_CACHE_DIR", str(root))
    return root


@pytest.fixture
def converts(monkeypatch) -> list[Path]:
    """Records each real conversion's file (the wrapped ``_convert`` still runs)."""
    calls: list[Path] = []
    real = gguf_import._convert

    def counting(file, dest, *args):
        calls.append(file)
        return real(file, dest, *args)

    monkeypatch.setattr(gguf_import, "_convert", counting)
    return calls


def cli_import(capsys, *args) -> tuple[int, str, str]:
    code = main(["import", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, file: Path, reason: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and str(file) in lines[0] and reason in lines[0], lines[0]
    assert "Traceback" not in err


def assert_no_entry(cache: Path) -> None:
    """Nothing under the cache a later run could take for a (complete or partial) entry: at most
    remembered hashes and lock files, never a model folder or a temporary one."""
    if not cache.exists():
        return
    for p in cache.rglob("*"):
        rel = p.relative_to(cache).parts
        assert rel[:2] in {("gguf",), ("gguf", "hashes"), ("gguf", "locks")}, f"left in the cache: {p}"
        if len(rel) == 3:
            assert p.is_file(), p


# ---- bad files: exit 2, one line, nothing cached ----------------------------------------------------


def test_non_gguf_file(tmp_path, cache, capsys):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    code, out, err = cli_import(capsys, bad)
    assert code == 2 and out == ""
    assert_one_line_error(err, bad, "not a GGUF file")
    assert not cache.exists()  # checked before hashing: not even a remembered hash


def test_missing_file_and_folder(tmp_path, cache, capsys):
    missing = tmp_path / "nope.gguf"
    code, _, err = cli_import(capsys, missing)
    assert code == 2
    assert_one_line_error(err, missing, "not found")
    code, _, err = cli_import(capsys, tmp_path)
    assert code == 2
    assert_one_line_error(err, tmp_path, "is a folder")
    assert not cache.exists()


@pytest.mark.parametrize("keep", [6, 40, 300, 4000, -1000, -1], ids=lambda k: f"keep{k}")
def test_truncated_file(tiny_gguf, tmp_path, cache, capsys, keep):
    """Cut inside the version field, the header, the metadata, the tensor infos, the tensor data
    and one byte short of the end: always one line saying the file is truncated."""
    data = tiny_gguf.read_bytes()
    cut = tmp_path / "half-downloaded.gguf"
    cut.write_bytes(data[:keep])
    code, out, err = cli_import(capsys, cut)
    assert code == 2 and out == ""
    assert_one_line_error(err, cut, "truncated")
    assert_no_entry(cache)


def test_unsupported_architecture(tiny_gguf, tmp_path, cache, capsys):
    other = rewrite(tiny_gguf, tmp_path / "rwkv.gguf", arch="rwkv6")
    code, _, err = cli_import(capsys, other)
    assert code == 2
    assert_one_line_error(err, other, "architecture 'rwkv6' cannot be loaded by transformers")
    assert "llama" in err and "general" not in err  # the list names architectures, not metadata sections
    assert_no_entry(cache)


@pytest.mark.parametrize("arch, known_as", [("qwen2moe", "qwen2_moe"), ("qwen3moe", "qwen3_moe")])
def test_llama_cpp_architecture_names_pass_the_check(tiny_gguf, tmp_path, arch, known_as):
    """llama.cpp writes Qwen MoE files as ``qwen2moe``; transformers converts them (it renames
    them to ``qwen2_moe`` first), so the check must not refuse them."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if known_as not in GGUF_SUPPORTED_ARCHITECTURES:
        pytest.skip(f"this transformers does not convert {known_as}")
    info = gguf_import.inspect(rewrite(tiny_gguf, tmp_path / f"{arch}.gguf", arch=arch))
    assert info["architecture"] == arch


def test_tokenizer_transformers_cannot_convert(tiny_gguf, tmp_path, cache, capsys):
    other = rewrite(tiny_gguf, tmp_path / "odd-vocab.gguf", fields={"tokenizer.ggml.model": "rwkv"})
    assert gguf_import.inspect(other)["architecture"] == "llama"  # the header check passes it
    code, _, err = cli_import(capsys, other)
    assert code == 2
    assert_one_line_error(err, other, "transformers cannot convert this GGUF tokenizer")
    assert "rwkv" in err
    assert_no_entry(cache)


def test_file_without_tensors(tiny_model_dir, tmp_path, cache, capsys):
    vocab_only = tmp_path / "vocab-only.gguf"
    writer = gguf.GGUFWriter(str(vocab_only), "llama")
    writer.add_token_list(["a", "b"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    code, _, err = cli_import(capsys, vocab_only)
    assert code == 2
    assert_one_line_error(err, vocab_only, "holds no tensors")
    assert_no_entry(cache)


def test_real_command_prints_no_traceback(tmp_path, cache):
    """The installed entry point, in its own process: exit 2 and a single stderr line."""
    bad = tmp_path / "notes.gguf"
    bad.write_text("just some text\n")
    proc = subprocess.run(
        [sys.executable, "-m", "tunesmith", "import", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc.stderr, bad, "not a GGUF file")
    assert_no_entry(cache)


# ---- interrupted conversions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "interrupt", [RuntimeError("disk full"), KeyboardInterrupt()], ids=["error", "ctrl-c"]
)
def test_conversion_failing_midway_leaves_no_entry(tiny_gguf, cache, monkeypatch, interrupt):
    """The conversion writes every file (source record included) and then fails before the
    rename: the cache holds no entry, and the next run converts afresh."""
    real = gguf_import._convert
    written: list[list[str]] = []

    def fails_after_writing(file, dest, *args):
        real(file, dest, *args)
        written.append(sorted(p.name for p in dest.iterdir()))
        raise interrupt

    monkeypatch.setattr(gguf_import, "_convert", fails_after_writing)
    with pytest.raises(type(interrupt)):
        import_gguf(tiny_gguf)
    assert written and {"config.json", "model.safetensors", SOURCE_FILE} <= set(written[0])
    assert_no_entry(cache)

    monkeypatch.setattr(gguf_import, "_convert", real)
    source = import_gguf(tiny_gguf)
    assert source_of(source.folder) is not None and Path(source.folder).parent == cache / "gguf"


def test_leftovers_of_a_killed_conversion_are_replaced(tiny_gguf, cache, converts):
    """A process killed mid-way can leave its temporary folder, and (an older layout, a hand
    edit) a folder at the entry's name without its source record: neither counts as an entry,
    and the next conversion removes both."""
    sha = gguf_import.file_sha256(tiny_gguf)
    entry = cache_entry(sha, "float32", cache)
    stale_tmp = cache / "gguf" / f".tmp-{entry.name}-killed"
    for folder in (entry, stale_tmp):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
    (stale_tmp / SOURCE_FILE).write_text("{}")

    source = import_gguf(tiny_gguf)
    assert len(converts) == 1 and source.folder == str(entry)
    assert source_of(entry).sha256 == sha and (entry / "model.safetensors").is_file()
    assert not stale_tmp.exists()


# ---- reuse -----------------------------------------------------------------------------------------


def test_second_call_reuses_the_entry(tiny_gguf, cache, converts, monkeypatch, capsys):
    hashed: list[Path] = []
    real_hash = gguf_import.sha256_file
    monkeypatch.setattr(gguf_import, "sha256_file", lambda p: hashed.append(p) or real_hash(p))

    first = import_gguf(tiny_gguf)
    code, out, _ = cli_import(capsys, tiny_gguf)
    again = gguf_import.resolve_model_path(tiny_gguf)
    assert code == 0 and out.splitlines()[0] == first.folder == again
    assert len(converts) == 1  # converted once
    assert len(hashed) == 1  # and hashed once: the file's stat is unchanged

    # an identical copy elsewhere is the same content: same entry, no conversion
    copy = rewrite(tiny_gguf, tiny_gguf.parent / "copy.gguf")
    assert copy.read_bytes() == tiny_gguf.read_bytes()
    found = gguf_import.model_source(copy)
    assert found.folder == first.folder and found.file == str(copy.resolve())
    assert len(converts) == 1
    copy.unlink()


def test_two_processes_convert_once(tiny_gguf, cache, converts, monkeypatch):
    """The entry's lock serialises two importers (threads here; flock is per open file): one
    converts, the other finds the finished entry."""
    real = gguf_import._convert

    def slow(file, dest, *args):
        time.sleep(0.3)
        return real(file, dest, *args)

    monkeypatch.setattr(gguf_import, "_convert", slow)
    results: list = []
    threads = [
        threading.Thread(target=lambda: results.append(import_gguf(tiny_gguf).folder)) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2 and results[0] == results[1]
    assert len(converts) == 1


# ---- what a converted file is -----------------------------------------------------------------------


def test_converted_file_equals_transformers_gguf_loader(tiny_gguf, tiny_model_dir, cache):
    """tunesmith's loader on the .gguf path == transformers' own GGUF loader (weights, logits,
    tokenizer, chat template); both are close to the f16-rounded source model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.models.load import load_causal_lm, load_tokenizer

    ours = load_causal_lm(str(tiny_gguf), attn_implementation="eager").eval()
    theirs = AutoModelForCausalLM.from_pretrained(
        str(tiny_gguf.parent), gguf_file=tiny_gguf.name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    source = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), attn_implementation="eager").eval()
    assert ours.name_or_path == str(tiny_gguf)  # adapters will name the file as their base
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert ours_state.keys() == theirs_state.keys()
    assert all(torch.equal(ours_state[k], theirs_state[k]) for k in ours_state)

    tok = load_tokenizer(str(tiny_gguf))
    ref_tok = AutoTokenizer.from_pretrained(str(tiny_gguf.parent), gguf_file=tiny_gguf.name)
    chat = [
        {"role": "user", "content": "what color is the sky?"},
        {"role": "assistant", "content": "the sky is blue."},
    ]
    text = tok.apply_chat_template(chat, tokenize=False)
    assert text == ref_tok.apply_chat_template(chat, tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == ref_tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text

    x = torch.tensor([ids])
    with torch.no_grad():
        a, b, c = ours(x).logits, theirs(x).logits, source(x).logits
    assert torch.equal(a, b)
    torch.testing.assert_close(a, c, atol=2e-2, rtol=0)  # f16 storage of the weights

    record = source_of(Path(gguf_import.resolve_model_path(tiny_gguf)))
    assert record.sha256 == hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert (record.quantization, record.architecture, record.dtype) == ("F16", "llama", "float32")


def test_import_out_folder(tiny_gguf, tmp_path, cache, capsys, converts):
    out = tmp_path / "hf"
    code, printed, err = cli_import(capsys, tiny_gguf, "--out", out)
    assert code == 0, err
    assert printed.splitlines()[0] == str(out) and "F16 GGUF" in printed
    assert {"config.json", "model.safetensors", "tokenizer.json", SOURCE_FILE} <= {
        p.name for p in out.iterdir()
    }
    assert source_of(out).folder == "" and source_of(out).file == str(tiny_gguf)
    assert_no_entry(cache)  # --out writes no cache entry
    assert not list(tmp_path.glob(".tmp-*"))

    code, _, err = cli_import(capsys, tiny_gguf, "--out", out)  # not empty now
    assert code == 2
    assert "already exists" in err and len(err.strip().splitlines()) == 1
    assert len(converts) == 1


# ---- other commands naming a .gguf -------------------------------------------------------------------


def test_export_hf_of_a_gguf_model(tiny_gguf, tmp_path, cache, capsys):
    """``tunesmith export MODEL.gguf --format hf`` re-saves the dequantised model (verified)."""
    out = tmp_path / "hf"
    assert main(["export", str(tiny_gguf), "--format", "hf", "--out", str(out)]) == 0, capsys.readouterr().err
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


def test_export_gguf_of_a_gguf_model(tiny_gguf, tmp_path, cache, capsys):
    """``tunesmith export MODEL.gguf --format gguf`` writes a GGUF of the dequantised model."""
    out = tmp_path / "gguf"
    assert main(["export", str(tiny_gguf), "--format", "gguf", "--out", str(out)]) == 0, (
        capsys.readouterr().err
    )
    assert list(out.glob("*.gguf"))


def test_reward_model_on_a_gguf_base(tiny_gguf, tmp_path, cache):
    """``method: reward`` trains over a .gguf base, and the adapter (which records the .gguf as
    its base) loads and scores."""
    import factory

    import tunesmith
    from tunesmith.models.reward_model import load_reward_model, score

    pairs = factory.write_jsonl(tmp_path / "pairs.jsonl", factory.preference_pairs(4))
    out = tmp_path / "rm"
    tunesmith.train(
        {
            "model": str(tiny_gguf),
            "method": "reward",
            "data": {"train": str(pairs), "eval_fraction": 0.0},
            "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
            "train": {
                "max_steps": 1,
                "batch_size": 2,
                "max_length": 64,
                "save_every": 0,
                "eval_every": 0,
                "progress": "none",
            },
            "output_dir": str(out),
        },
        resume=False,
    )
    model, tokenizer = load_reward_model(str(out / "final"))
    (reward,) = score(
        model, tokenizer, [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}]]
    )
    assert math.isfinite(reward)


def test_jobs_service_base_model_may_be_a_gguf_file(tiny_gguf, tmp_path, cache):
    """``tunesmith server --base-model NAME=FILE.gguf``: checked and dequantised at start-up (one
    line naming the option for a bad file), then named by the file like any base."""
    from tunesmith.errors import ConfigError
    from tunesmith.jobs.settings import parse_base_models

    bases = parse_base_models([f"tiny={tiny_gguf}"])
    assert bases == {"tiny": tiny_gguf.resolve()}
    assert source_of(import_gguf(tiny_gguf).folder) is not None  # built at start-up, reused here
    bad = tmp_path / "half.gguf"
    bad.write_bytes(tiny_gguf.read_bytes()[:4096])
    with pytest.raises(ConfigError, match=r"--base-model 'half=.*half\.gguf'.*(truncated|unreadable)"):
        parse_base_models([f"half={bad}"])


def test_a_lora_adapter_gguf_is_not_a_model(tmp_path, cache, capsys):
    """llama.cpp's LoRA files (general.type "adapter") are refused in one line, nothing cached."""
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / "lora.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_type("adapter")
    writer.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert main(["import", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "'adapter' file, not a model" in err[0]
    assert not (cache / "gguf").exists() or not [
        p for p in (cache / "gguf").iterdir() if p.name not in ("hashes", "locks")
    ]
