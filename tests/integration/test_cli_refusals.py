"""Refusing pickled weights or an unsafe chat template is a user error like any other: one line
naming the file, exit 2, no traceback, and the hostile payload never runs (issue 16)."""

from __future__ import annotations

import os
import pickle
import shutil

import factory
import pytest
import yaml

from tunesmith.cli import main

UNSAFE_TEMPLATE = (
    "{{ ''.__class__.__mro__[1].__subclasses__() }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
)


class _Canary:
    """Unpickling this would create ``path``: proof that a pickle ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_model_dir, tiny_tokenizer):
    """A real PEFT LoRA adapter folder over the tiny Llama, with its tokenizer."""
    from tunesmith.config import AdapterConfig
    from tunesmith.models.adapters import attach_adapter
    from tunesmith.models.load import load_causal_lm

    out = tmp_path_factory.mktemp("adapter")
    model = attach_adapter(load_causal_lm(str(tiny_model_dir)), AdapterConfig(type="lora", r=4, alpha=8))
    model.save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


@pytest.fixture()
def pickled_adapter(tmp_path, adapter_dir):
    """The adapter with its weights replaced by a hostile pickle (adapter_model.bin)."""
    folder = tmp_path / "pickled"
    shutil.copytree(adapter_dir, folder)
    (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_model.bin").write_bytes(pickle.dumps({"w": _Canary(tmp_path / "PWNED")}))
    return folder


@pytest.fixture()
def unsafe_model(tmp_path, tiny_model_dir):
    """The tiny model whose chat template reaches for Python internals."""
    folder = tmp_path / "unsafe"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "chat_template.jinja").write_text(UNSAFE_TEMPLATE)
    return folder


def _refused(capsys, argv, *needles):
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err), err
    for needle in needles:
        assert needle in err[-1], err[-1]
    return err[-1]


@pytest.mark.parametrize("command", ["generate", "merge", "export", "eval"])
def test_pickled_adapter_is_refused_in_one_line(capsys, tmp_path, pickled_adapter, tiny_model_dir, command):
    data = factory.write_jsonl(tmp_path / "d.jsonl", factory.color_chats(4, seed=0))
    argv = {
        "generate": ["generate", "--model", tiny_model_dir, "--adapter", pickled_adapter, "--prompt", "hi"],
        "merge": ["merge", pickled_adapter, "--model", tiny_model_dir, "--out", tmp_path / "m"],
        "export": ["export", pickled_adapter, "--format", "hf", "--out", tmp_path / "e"],
        "eval": ["eval", pickled_adapter, "--data", data, "--limit", "2", "--out", tmp_path / "r"],
    }[command]
    _refused(capsys, argv, "adapter_model.bin", "safetensors")
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("command", ["generate", "export", "eval", "train"])
def test_unsafe_chat_template_is_refused_in_one_line(capsys, tmp_path, unsafe_model, command):
    data = factory.write_jsonl(tmp_path / "d.jsonl", factory.color_chats(12, seed=0))
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": str(unsafe_model),
                "data": {"train": str(data), "eval_fraction": 0},
                "train": {"max_steps": 1, "save_every": 0, "eval_every": 0},
                "output_dir": str(tmp_path / "run"),
            }
        )
    )
    argv = {
        "generate": ["generate", "--model", unsafe_model, "--prompt", "hi"],
        "export": ["export", unsafe_model, "--format", "gguf", "--out", tmp_path / "e"],
        "eval": ["eval", unsafe_model, "--data", data, "--limit", "2", "--out", tmp_path / "r"],
        "train": ["train", config],
    }[command]
    _refused(capsys, argv, "unsafe", "__class__")


def test_merge_refuses_an_adapter_whose_saved_template_is_unsafe(
    capsys, tmp_path, adapter_dir, tiny_model_dir
):
    folder = tmp_path / "adapter"
    shutil.copytree(adapter_dir, folder)
    (folder / "chat_template.jinja").write_text(UNSAFE_TEMPLATE)
    _refused(capsys, ["merge", folder, "--model", tiny_model_dir, "--out", tmp_path / "m"], "unsafe")
