"""Distillation end to end on tiny models (CPU).

A teacher (2-layer Llama, hidden 128) is first fully fine-tuned on the synthetic color task. A
smaller student (1 layer, hidden 32, random init) is then trained for the same number of steps
on a *transfer set* either by distillation from the teacher or by plain SFT on the set's labels.

The transfer set is the color task with stale labels (answers end in "!" and two colors are
swapped): data whose labels disagree with the teacher in places, as when distilling a fine-tuned
teacher on older data. Distillation (alpha 0) learns what the teacher says; SFT learns the labels. On
clean data the two reach similar teacher agreement at this scale (measured: 82.9 % vs 81.4 %
after 40 steps), too close for a stable test, so the disagreement is what this test pins down:
the distilled student follows the teacher, and its held-out KL to the teacher falls clearly.
"""

from __future__ import annotations

import json

import factory
import pytest

import tunesmith
from tunesmith.methods.distill_eval import compare_paths

STEPS = 40


def _stale(rows):
    """Older labels: a different ending ("!" for ".") and two colors swapped."""
    swap = {"the sky is blue.": "the sky is green.", "the grass is green.": "the grass is blue."}
    for row in rows:
        last = row["messages"][-1]
        last["content"] = swap.get(last["content"], last["content"]).replace(".", "!")
    return rows


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_tokenizer, color_data):
    root = tmp_path_factory.mktemp("distill-e2e")
    teacher_base, teacher_out = root / "teacher-base", root / "teacher"
    factory.build_model(
        teacher_base, "llama", vocab_size=len(tiny_tokenizer), hidden_size=128, intermediate_size=256
    )
    tiny_tokenizer.save_pretrained(teacher_base)
    # Held-out CE 0.10, token accuracy 98.8 % (measured): a confident teacher, so top-1
    # agreement is not decided by near-ties.
    tunesmith.train(
        {
            "model": str(teacher_base),
            "data": {"train": str(color_data[0]), "eval": str(color_data[1])},
            "adapter": {"type": "none"},
            "output_dir": str(teacher_out),
            "train": {
                "max_steps": 60,
                "batch_size": 8,
                "max_length": 128,
                "lr": 5e-3,
                "save_every": 0,
                "eval_every": 0,
                "progress": "none",
            },
        }
    )
    student = root / "student"
    factory.build_model(
        student,
        "llama",
        vocab_size=len(tiny_tokenizer),
        seed=1,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    tiny_tokenizer.save_pretrained(student)
    transfer = factory.write_jsonl(root / "transfer.jsonl", _stale(factory.color_chats(120, seed=1)))
    return root, teacher_out, student, transfer, color_data[1]


def _student_cfg(setup, name, method, **distill):
    root, teacher, student, transfer, heldout = setup
    return {
        "model": str(student),
        "method": method,
        "output_dir": str(root / name),
        "data": {"train": str(transfer), "eval": str(heldout)},
        "adapter": {"type": "none"},
        "distill": {"teacher": str(teacher), **distill},
        "train": {
            "max_steps": STEPS,
            "batch_size": 8,
            "max_length": 128,
            "lr": 1e-2,
            "save_every": 0,
            "eval_every": STEPS,
            "eval_at_start": True,
            "progress": "none",
        },
    }


@pytest.fixture(scope="module")
def runs(setup):
    root, teacher, _, _, heldout = setup
    tunesmith.train(_student_cfg(setup, "distilled", "distill", alpha=0.0, cache_top_k=64))
    tunesmith.train(_student_cfg(setup, "sft", "sft"))
    return {
        name: compare_paths(str(root / name), str(teacher), str(heldout)) for name in ("distilled", "sft")
    }


def test_distilled_student_moves_towards_the_teacher(setup, runs):
    root = setup[0]
    rows = [json.loads(x) for x in (root / "distilled" / "metrics.jsonl").read_text().splitlines()]
    start, end = rows[0], rows[-1]
    assert start["step"] == 0 and end["step"] == STEPS
    # Held-out KL(teacher‖student) (alpha 0: eval_loss is the divergence) falls clearly.
    assert end["eval_divergence"] < 0.5 * start["eval_divergence"]
    assert end["eval_agreement"] > start["eval_agreement"] + 0.5
    # Per-step metrics: loss, its CE and divergence parts, top-1 agreement.
    for key in ("loss", "ce", "divergence", "agreement"):
        assert key in rows[1]
    assert rows[1]["loss"] == pytest.approx(rows[1]["divergence"], rel=1e-6)  # alpha = 0
    # The top-k cache was written once, keyed by teacher + data.
    assert len(list((root / "distilled" / "teacher_cache").glob("topk-*.safetensors"))) == 2


def test_distillation_beats_sft_on_teacher_agreement(runs):
    distilled, sft = runs["distilled"], runs["sft"]
    print("distilled", distilled, "sft", sft)  # shown with pytest -s
    assert distilled["agreement"] > sft["agreement"] + 0.03, (distilled, sft)
    assert distilled["kl"] < sft["kl"]
