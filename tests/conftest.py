"""Shared fixtures: a locally trained tokenizer and tiny random models (no network, seconds)."""

from __future__ import annotations

import os

# Tiny models gain nothing from a second thread, and OpenMP threads spinning against another
# process on a 2-core machine slow small kernels down by 10x or more. Set before torch loads;
# subprocesses (CLI tests) inherit it.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Rendered data is cached across runs (tunesmith.data.render_cache); tests that patch rendering
# must see it run, so the suite renders afresh unless a test turns the cache on itself.
os.environ["TUNESMITH_RENDER_CACHE"] = "0"

import factory  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip cleanly on a machine without a CUDA GPU (CI, developers)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (bench/gpu_check.sh runs these on a lent one)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    factory.build_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny Llama with the tiny tokenizer saved beside it (a complete HF model folder)."""
    path = tmp_path_factory.mktemp("llama")
    factory.build_model(path, "llama", vocab_size=len(tiny_tokenizer))
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def color_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("colors")
    train = factory.write_jsonl(d / "train.jsonl", factory.color_chats(120, seed=1))
    heldout = factory.write_jsonl(d / "eval.jsonl", factory.color_chats(24, seed=2))
    return train, heldout


@pytest.fixture(scope="session")
def fork_trainer(tmp_path_factory, tiny_model_dir, color_data):
    """``tunesmith …`` as real processes at fork cost (:class:`resume_harness.ForkTrainer`),
    warmed by a LoRA run of the tiny Llama that evaluates and checkpoints (so the modules a run
    imports lazily are loaded once). For tests that need what a process gives — SIGKILL, an
    exit code, stdout/stderr as a terminal sees them, stdin — but not a fresh import of torch."""
    import yaml
    from resume_harness import ForkTrainer

    root = tmp_path_factory.mktemp("fork-warm")
    cfg = {
        "model": str(tiny_model_dir),
        "data": {"train": str(color_data[0]), "eval": str(color_data[1])},
        "adapter": {"type": "lora", "r": 2, "alpha": 4},
        "train": {"max_steps": 2, "batch_size": 2, "max_length": 48, "save_every": 1, "eval_every": 1},
        "output_dir": str(root / "run"),
    }
    (root / "warm.yaml").write_text(yaml.safe_dump(cfg))
    server = ForkTrainer(["train", str(root / "warm.yaml")], root / "warm.log")
    yield server
    server.close()
