"""A reinforcement (RFT) job through the jobs API on the shipped SmolLM2-135M-Instruct: a
string_check grader on "the capital of X, in one word" raises the validation reward.

Validation is 8 countries the training file does not hold; before training SmolLM2 names their
capital in 0–5 % of its 8-token answers (it rambles: "What a delightful question! …"). Ten GRPO
steps on 20 other countries (2 prompts × 4 answers per step, LoRA lr 2e-3; the grader's
``ilike`` finds the capital anywhere in the answer) carry over to the held-out countries:
the validation mean reward, measured: 0.00 → 0.66
(seed 0; train rewards 0.12 0.12 0.62 0.38 1.00 0.62 0.75 0.50 1.00 0.88), 158 s.
It is marked slow (about 2.5 minutes of CPU):

    OMP_NUM_THREADS=1 pytest tests/realmodel/test_smollm2_rft.py -m slow -s
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "contract"))
from jobs_harness import Service, jsonl_bytes, wait_status  # noqa: E402

pytest.importorskip("fastapi")
pytestmark = pytest.mark.slow

TRAIN = [
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Italy", "Rome"),
    ("Germany", "Berlin"),
    ("Spain", "Madrid"),
    ("England", "London"),
    ("Russia", "Moscow"),
    ("Egypt", "Cairo"),
    ("China", "Beijing"),
    ("Greece", "Athens"),
    ("Portugal", "Lisbon"),
    ("Austria", "Vienna"),
    ("Ireland", "Dublin"),
    ("Norway", "Oslo"),
    ("Sweden", "Stockholm"),
    ("Poland", "Warsaw"),
    ("Canada", "Ottawa"),
    ("Mexico", "Mexico City"),
    ("Peru", "Lima"),
    ("Kenya", "Nairobi"),
]
HELD_OUT = [
    ("Belgium", "Brussels"),
    ("Denmark", "Copenhagen"),
    ("Finland", "Helsinki"),
    ("Hungary", "Budapest"),
    ("Turkey", "Ankara"),
    ("India", "New Delhi"),
    ("Thailand", "Bangkok"),
    ("Argentina", "Buenos Aires"),
]
GRADER = {
    "type": "string_check",
    "name": "capital",
    "operation": "ilike",
    "input": "{{sample.output_text}}",
    "reference": "{{item.capital}}",
}


def _rows(pairs):
    return [
        {
            "messages": [
                {
                    "role": "user",
                    "content": f"What is the capital of {country}? Answer with the city "
                    "name only, in one word.",
                }
            ],
            "capital": capital,
        }
        for country, capital in pairs
    ]


def test_an_rft_job_raises_the_reward_on_smollm2(tmp_path, smollm2_dir):
    svc = Service(
        tmp_path,
        {"smollm2": smollm2_dir},
        poll_interval=0.5,
        train_overrides=["train.max_length=128", "grpo.max_new_tokens=8"],
    )
    try:
        svc.start_worker()
        client = svc.client()
        train, valid = (
            client.files.create(file=(n, jsonl_bytes(_rows(p)), "application/jsonl"), purpose="fine-tune")
            for n, p in (("train.jsonl", TRAIN), ("valid.jsonl", HELD_OUT))
        )
        job = client.fine_tuning.jobs.create(
            model="smollm2",
            training_file=train.id,
            validation_file=valid.id,
            seed=0,
            method={
                "type": "reinforcement",
                "reinforcement": {
                    "grader": GRADER,
                    "hyperparameters": {
                        "n_epochs": 1,
                        "batch_size": 2,
                        "learning_rate_multiplier": 10,
                        "compute_multiplier": 0.5,
                        "eval_interval": 10,
                    },
                },
            },
        )
        done = wait_status(client, job.id, ("succeeded", "failed", "cancelled"), timeout=900)
        assert done.status == "succeeded", done.error
        events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))[::-1]
        before = next(e for e in events if e.message.startswith("Before training:")).data[
            "full_valid_mean_reward"
        ]
        after = [e for e in events if e.type == "metrics"][-1].data["full_valid_mean_reward"]
        train_rewards = [e.data["train_mean_reward"] for e in events if e.type == "metrics"]
        print(
            f"\nvalidation mean reward: {before:.3f} before -> {after:.3f} after 10 steps; train rewards "
            + " ".join(f"{r:.2f}" for r in train_rewards)
        )
        assert after >= before + 0.25
    finally:
        svc.close()
