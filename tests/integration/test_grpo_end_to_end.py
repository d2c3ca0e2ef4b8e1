"""GRPO end to end on a tiny model: the reward rises, and SIGKILL + resume == uninterrupted.

The verifiable toy task: "the answer contains a digit". The tiny random Llama emits a digit in
a 4-token completion a few percent of the time, which gives groups with reward variance to
learn from; within a short run the policy learns to emit digits. The LM head is trained too
(``modules_to_save``): a random tiny model's frozen head cannot express a peaked distribution.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

import factory
import tunesmith

TIMING = {"step_time_s", "tokens_per_s"}


def _prompts(path: Path, n: int, seed: int) -> Path:
    import random

    rng = random.Random(seed)
    rows = [{"prompt": f"{rng.choice(factory.WORDS)} {rng.choice(factory.WORDS)} number?", "id": i}
            for i in range(n)]
    return factory.write_jsonl(path, rows)


def _config(model, train, heldout, out, rewards, **train_cfg) -> dict:
    t = {"max_steps": 16, "batch_size": 4, "max_length": 64, "lr": 1e-2, "scheduler": "constant",
         "warmup_steps": 0, "save_every": 0, "eval_every": 16, "eval_at_start": True, "progress": "none"}
    t.update(train_cfg)
    return {"model": str(model), "method": "grpo", "data": {"train": str(train), "eval": str(heldout)},
            "adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "modules_to_save": ["lm_head"]},
            "train": t, "grpo": {"group_size": 8, "max_new_tokens": 4, "beta": 0.04, "rewards": rewards},
            "output_dir": str(out)}


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_mean_reward_rises_on_a_verifiable_task(tmp_path, tiny_model_dir):
    train = _prompts(tmp_path / "train.jsonl", 48, seed=1)
    heldout = _prompts(tmp_path / "eval.jsonl", 8, seed=2)
    out = tmp_path / "run"
    tunesmith.train(_config(tiny_model_dir, train, heldout, out, [{"type": "regex", "pattern": "[0-9]", "name": "digit"}]))
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


KILLER = '''
import os, signal
from pathlib import Path

def digit(prompt, completion, **fields):
    marker = os.environ.get("GRPO_TEST_KILL_AFTER")
    if marker and Path(marker).exists():  # the checkpoint is committed: die mid-rollout
        os.kill(os.getpid(), signal.SIGKILL)
    return float(any(ch.isdigit() for ch in completion))
'''


def _cli_train(config: dict, tmp_path: Path, name: str, env_extra: dict) -> subprocess.CompletedProcess:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **env_extra}
    return subprocess.run([sys.executable, "-m", "tunesmith", "train", str(path)], capture_output=True,
                          text=True, env=env, timeout=600)


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, tiny_model_dir):
    train = _prompts(tmp_path / "train.jsonl", 24, seed=3)
    heldout = _prompts(tmp_path / "eval.jsonl", 4, seed=4)
    (tmp_path / "killer_reward.py").write_text(KILLER)
    rewards = [{"type": "python", "function": f"{tmp_path / 'killer_reward.py'}:digit"}, {"type": "length"}]
    steps = dict(max_steps=6, save_every=3, eval_every=3, eval_at_start=False)

    # Uninterrupted reference in this process (one thread, like the subprocess: conftest).
    tunesmith.train(_config(tiny_model_dir, train, heldout, tmp_path / "ref", rewards, **steps))

    # The same run as a CLI process, SIGKILLed by its own reward function during the rollout
    # of step 4, right after checkpoint 3 was committed.
    cfg = _config(tiny_model_dir, train, heldout, tmp_path / "killed", rewards, **steps)
    marker = tmp_path / "killed" / "checkpoints" / "step-000003" / "COMMITTED"
    killed = _cli_train(cfg, tmp_path, "killed", {"GRPO_TEST_KILL_AFTER": str(marker)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert marker.exists() and not (tmp_path / "killed" / "final").exists()

    result = tunesmith.train(cfg)  # resume="auto": continues from checkpoint 3
    assert result.resumed_from == 3
    want = [{k: v for k, v in r.items() if k not in TIMING} for r in _rows(tmp_path / "ref")]
    got = [{k: v for k, v in r.items() if k not in TIMING} for r in _rows(tmp_path / "killed")]
    assert [r["step"] for r in got] == list(range(1, 7))
    # Same samples, rewards, KL and losses, bit for bit (CPU fp32): the sampling RNG resumed.
    assert got == want
    assert len({r["reward"] for r in want}) > 1  # a non-trivial run (the comparison can fail)
