"""GRPO end to end on a tiny model: the reward rises, and SIGKILL + resume == uninterrupted,
with one optimizer step per rollout (μ = 1) and with each rollout re-used for two (μ = 2).

The verifiable toy task: "the answer contains a digit". The tiny random Llama emits a digit in
a 4-token completion a few percent of the time, which gives groups with reward variance to
learn from; within a short run the policy learns to emit digits. The LM head is trained too
(``modules_to_save``): a random tiny model's frozen head cannot express a peaked distribution.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import factory
import pytest
import torch
import yaml

import tunesmith

TIMING = {"step_time_s", "tokens_per_s"}


def _prompts(path: Path, n: int, seed: int) -> Path:
    import random

    rng = random.Random(seed)
    rows = [
        {"prompt": f"{rng.choice(factory.WORDS)} {rng.choice(factory.WORDS)} number?", "id": i}
        for i in range(n)
    ]
    return factory.write_jsonl(path, rows)


def _config(model, train, heldout, out, rewards, iterations=1, **train_cfg) -> dict:
    t = {
        "max_steps": 16,
        "batch_size": 4,
        "max_length": 64,
        "lr": 1e-2,
        "scheduler": "constant",
        "warmup_steps": 0,
        "save_every": 0,
        "eval_every": 16,
        "eval_at_start": True,
        "progress": "none",
    }
    t.update(train_cfg)
    return {
        "model": str(model),
        "method": "grpo",
        "data": {"train": str(train), "eval": str(heldout)},
        "adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "modules_to_save": ["lm_head"]},
        "train": t,
        "grpo": {
            "group_size": 8,
            "max_new_tokens": 4,
            "beta": 0.04,
            "rewards": rewards,
            "iterations": iterations,
        },
        "output_dir": str(out),
    }


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("iterations", [1, 2])
def test_mean_reward_rises_on_a_verifiable_task(tmp_path, tiny_model_dir, iterations):
    train = _prompts(tmp_path / "train.jsonl", 48, seed=1)
    heldout = _prompts(tmp_path / "eval.jsonl", 8, seed=2)
    out = tmp_path / "run"
    tunesmith.train(
        _config(
            tiny_model_dir,
            train,
            heldout,
            out,
            [{"type": "regex", "pattern": "[0-9]", "name": "digit"}],
            iterations=iterations,
        )
    )
    rows = _rows(out)
    assert [r["step"] for r in rows] == list(range(0, 17))
    start, end = rows[0], rows[-1]
    # Held-out prompts, sampled with the same prompt-derived seed at both ends: the policy, not
    # the noise, changed. The untrained model finds a digit in a few percent of completions.
    assert end["eval_reward"] > start["eval_reward"] + 0.3
    early = sum(r["reward"] for r in rows[1:5]) / 4
    late = sum(r["reward"] for r in rows[-4:]) / 4
    assert late > early + 0.3
    for key in ("loss", "reward", "reward_std", "reward_digit", "kl", "completion_length", "clip_fraction"):
        assert key in rows[1], key
    assert rows[1]["kl"] < 1e-6 < end["kl"]  # starts at the reference, then moves away from it
    assert (out / "final" / "adapter_model.safetensors").is_file()
    fresh = rows[1::iterations]  # the steps that sampled a new rollout
    # A fresh rollout is trained on with pi_old = pi: ratio exactly 1, nothing clipped.
    assert all(r["ratio_mean"] == 1.0 and r["clip_fraction"] == 0.0 for r in fresh)
    if iterations == 2:
        reused = rows[2::2]
        assert [r["rollout_use"] for r in rows[1:]] == [1.0, 2.0] * 8
        # A re-used rollout: the same samples (its reward is repeated) under a policy that has
        # taken a step since, so the ratio departs from 1 and the clip acts.
        assert all(
            r["reward"] == f["reward"] and r["completion_length"] == f["completion_length"]
            for f, r in zip(fresh, reused)
        )
        assert all(r["ratio_mean"] != 1.0 for r in reused)
        assert max(r["clip_fraction"] for r in reused) > 0
        assert rows[-1]["epoch"] == pytest.approx(16 / 2 * 4 / 48, abs=1e-4)  # 8 windows of 4 of 48 prompts


KILLER = """
import os, signal
from pathlib import Path

def digit(prompt, completion, **fields):
    marker = os.environ.get("GRPO_TEST_KILL_AFTER")
    if marker and Path(marker).exists():  # the checkpoint is committed: die mid-rollout
        os.kill(os.getpid(), signal.SIGKILL)
    return float(any(ch.isdigit() for ch in completion))
"""


def _cli_train(server, config: dict, tmp_path: Path, name: str, env: dict) -> tuple[int, str]:
    """``tunesmith train`` as a process forked from the warm ``server`` with ``env`` added to its
    environment: (exit code, everything it printed)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return server.run(["train", str(path)], tmp_path / f"{name}.log", env=env)


@pytest.mark.parametrize("iterations, kill_after", [(1, 3), (2, 2)])
def test_sigkill_then_resume_matches_uninterrupted(
    tmp_path, tiny_model_dir, fork_trainer, iterations, kill_after
):
    train = _prompts(tmp_path / "train.jsonl", 24, seed=3)
    heldout = _prompts(tmp_path / "eval.jsonl", 4, seed=4)
    (tmp_path / "killer_reward.py").write_text(KILLER)
    rewards = [{"type": "python", "function": f"{tmp_path / 'killer_reward.py'}:digit"}, {"type": "length"}]
    # With μ = 2 checkpoints fall on rollout boundaries (save_every 2), while evaluation (every
    # 3 steps) falls between the two uses of a rollout: it must not disturb the cached rollout.
    steps = dict(max_steps=6, save_every=kill_after, eval_every=3, eval_at_start=False)

    # Uninterrupted reference in this process (one thread, like the subprocess: conftest).
    tunesmith.train(_config(tiny_model_dir, train, heldout, tmp_path / "ref", rewards, iterations, **steps))

    # The same run as a CLI process, SIGKILLed by its own reward function during the next
    # rollout after checkpoint `kill_after` was committed (step 4 for μ = 1, step 3 for μ = 2).
    cfg = _config(tiny_model_dir, train, heldout, tmp_path / "killed", rewards, iterations, **steps)
    marker = tmp_path / "killed" / "checkpoints" / f"step-{kill_after:06d}" / "COMMITTED"
    rc, out = _cli_train(fork_trainer, cfg, tmp_path, "killed", {"GRPO_TEST_KILL_AFTER": str(marker)})
    assert rc == -signal.SIGKILL, out
    assert marker.exists() and not (tmp_path / "killed" / "final").exists()

    result = tunesmith.train(cfg)  # resume="auto": continues from checkpoint `kill_after`
    assert result.resumed_from == kill_after
    want = [{k: v for k, v in r.items() if k not in TIMING} for r in _rows(tmp_path / "ref")]
    got = [{k: v for k, v in r.items() if k not in TIMING} for r in _rows(tmp_path / "killed")]
    assert [r["step"] for r in got] == list(range(1, 7))
    # Same samples, rewards, KL and losses, bit for bit (CPU fp32): the sampling RNG resumed.
    assert got == want
    assert len({r["reward"] for r in want}) > 1  # a non-trivial run (the comparison can fail)
    if iterations == 2:
        assert any(r["clip_fraction"] > 0 for r in want)  # re-used rollouts were resumed too


def test_grpo_from_an_earlier_adapter_is_anchored_to_it(tmp_path, tiny_model_dir):
    """GRPO after an earlier run (``adapter.init_from``): the KL penalty's reference is the model
    training starts from (a frozen copy of that adapter), not the adapter-disabled base. So the
    first step's KL is exactly 0 although the earlier adapter moved the policy far from the base,
    and the saved adapter holds the trained adapter only."""
    from safetensors.torch import load_file

    train = _prompts(tmp_path / "train.jsonl", 16, seed=5)
    heldout = _prompts(tmp_path / "eval.jsonl", 4, seed=6)
    rewards = [{"type": "regex", "pattern": "[0-9]", "name": "digit"}]
    tunesmith.train(
        _config(tiny_model_dir, train, heldout, tmp_path / "first", rewards, max_steps=4, eval_every=4)
    )
    assert _rows(tmp_path / "first")[-1]["kl"] > 1e-3  # that adapter is far from the base

    cfg = _config(tiny_model_dir, train, heldout, tmp_path / "second", rewards, max_steps=2, eval_every=2)
    cfg["adapter"]["init_from"] = str(tmp_path / "first" / "final")
    tunesmith.train(cfg)
    rows = [r for r in _rows(tmp_path / "second") if "kl" in r]
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-7)
    assert rows[-1]["kl"] > 0  # and the policy moves away from it
    final = tmp_path / "second" / "final"
    assert not (final / "reference").exists()
    saved, start = (
        load_file(final / "adapter_model.safetensors"),
        load_file(tmp_path / "first" / "final" / "adapter_model.safetensors"),
    )
    assert saved.keys() == start.keys() and any(not torch.equal(saved[k], start[k]) for k in saved)
