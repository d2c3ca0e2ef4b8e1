"""GRPO with OpenAI graders as rewards, on the tiny model: a string_check, a text_similarity and a
score_model grader whose judge is a local model run through tunesmith's own generation.

The run is short (2 steps of 2 prompts x 4 completions); it shows the grader rewards are
computed on real completions and logged per step, the judge's unparseable replies are counted
as errors (scored 0) rather than stopping training, and the total is the weighted sum.
"""

from __future__ import annotations

import json
import logging

import factory
import pytest

import tunesmith


def test_grader_rewards_in_a_real_grpo_run(tmp_path, tiny_model_dir, caplog):
    rows = [{"prompt": f"{w} number?", "answer": w} for w in factory.WORDS[:12]]
    train = factory.write_jsonl(tmp_path / "train.jsonl", rows[:8])
    heldout = factory.write_jsonl(tmp_path / "eval.jsonl", rows[8:])
    grader_file = tmp_path / "echo.json"
    # like: the completion contains the example's word (the random tiny model rarely does)
    grader_file.write_text(
        json.dumps(
            {
                "type": "string_check",
                "name": "echo",
                "operation": "like",
                "input": "{{sample.output_text}}",
                "reference": "{{item.answer}}",
            }
        )
    )
    judge = {
        "type": "score_model",
        "name": "judge",
        "model": "tiny",
        "range": [0, 10],
        "sampling_params": {
            "max_completions_tokens": 4,
            "temperature": 0,
            "reasoning_effort": "high",
        },  # accepted, ignored
        "input": [
            {"role": "user", "content": "Rate 0-10: {{sample.output_text}} (expected {{item.answer}})"}
        ],
    }
    rewards = [
        {"type": "grader", "grader": str(grader_file)},
        {
            "type": "grader",
            "grader": judge,
            "judge_model": {"tiny": str(tiny_model_dir)},
            "weight": 0.5,
            "name": "judged",
        },
        {
            "type": "grader",
            "grader": {
                "type": "text_similarity",
                "name": "sim",
                "evaluation_metric": "fuzzy_match",
                "input": "{{sample.output_text}}",
                "reference": "{{item.answer}}",
            },
        },
    ]
    out = tmp_path / "run"
    cfg = {
        "model": str(tiny_model_dir),
        "method": "grpo",
        "data": {"train": str(train), "eval": str(heldout)},
        "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "train": {
            "max_steps": 2,
            "batch_size": 2,
            "max_length": 64,
            "lr": 1e-3,
            "scheduler": "constant",
            "warmup_steps": 0,
            "save_every": 0,
            "eval_every": 2,
            "progress": "none",
        },
        "grpo": {"group_size": 4, "max_new_tokens": 4, "rewards": rewards},
        "output_dir": str(out),
    }
    with caplog.at_level(logging.WARNING, logger="tunesmith"):
        tunesmith.train(cfg)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        for key in (
            "reward_echo",
            "reward_judged",
            "reward_sim",
            "reward_echo_errors",
            "reward_judged_errors",
            "reward_sim_errors",
        ):
            assert 0.0 <= r[key] <= 10.0, key
        # string_check / text_similarity on rows that have the field never fail
        assert r["reward_echo_errors"] == 0.0 and r["reward_sim_errors"] == 0.0
        # the step's mean reward is the weighted sum of the graders' means (error flags excluded)
        assert r["reward"] == pytest.approx(r["reward_echo"] + 0.5 * r["reward_judged"] + r["reward_sim"])
    # fuzzy similarity of real completions to the word: graded, non-zero, varying within groups
    assert all(r["reward_sim"] > 0 for r in steps) and any(r["reward_std"] > 0 for r in steps)
    assert "eval_reward" in rows[-1]
    # A judge reply without a number in [0, 10] is a counted, logged error, never a crash.
    failed = [r["reward_judged_errors"] for r in steps]
    if any(failed):
        assert "completions could not be graded and score 0" in caplog.text
