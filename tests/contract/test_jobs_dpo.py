"""``method: dpo`` jobs through the official SDK: OpenAI's preference-file validation messages,
the hyperparameter mapping onto ``method: dpo`` / ``preference:`` of the run config, and a short
DPO job trained end to end whose model then answers chat."""

from __future__ import annotations

import factory
import pytest
import yaml
from jobs_harness import service_fixtures, upload, wait_status

pytest.importorskip("fastapi")
DONE = ("succeeded", "failed", "cancelled")


svc, client = service_fixtures("dpo", workers=1, poll_interval=0.2, train_overrides=["train.max_length=64"])


def test_a_dpo_job_trains_end_to_end_with_beta_mapped(svc, client):
    pairs = factory.preference_pairs(10, seed=1, style="openai")
    assert set(pairs[0]) == {"input", "preferred_output", "non_preferred_output"}
    train, valid = upload(client, pairs), upload(client, factory.preference_pairs(4, seed=2, style="openai"))
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=train.id,
        validation_file=valid.id,
        suffix="prefs",
        seed=7,
        method={
            "type": "dpo",
            "dpo": {
                "hyperparameters": {
                    "beta": 0.25,
                    "n_epochs": 1,
                    "batch_size": 5,
                    "learning_rate_multiplier": 2,
                }
            },
        },
    )
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.25
    done = wait_status(client, job.id, DONE)
    assert done.status == "succeeded", done.error
    h = done.method.dpo.hyperparameters
    assert (h.beta, h.n_epochs, h.batch_size, h.learning_rate_multiplier) == (0.25, 1, 5, 2)
    assert done.hyperparameters.model_dump() == {
        "batch_size": 5,
        "learning_rate_multiplier": 2,
        "n_epochs": 1,
    }

    # What the worker handed to `tunesmith train`: the DPO method with OpenAI's beta, sigmoid loss,
    # lr = LoRA base lr (2e-4) x multiplier 2.
    cfg = yaml.safe_load((svc.settings.run_dir(job.id) / "config.resolved.yaml").read_text())
    assert cfg["method"] == "dpo"
    assert (cfg["preference"]["beta"], cfg["preference"]["loss"]) == (0.25, "sigmoid")
    assert (cfg["train"]["epochs"], cfg["train"]["batch_size"]) == (1, 5)
    assert cfg["train"]["lr"] == pytest.approx(4e-4)

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))[::-1]
    metrics = [e for e in events if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == [1, 2]  # 10 pairs / batch 5
    assert "valid_loss" in metrics[-1].data
    # DPO loss at step 1 is -log sigmoid(0) = ln 2: the adapter starts at zero (LoRA B = 0), so the
    # policy equals the reference and every implicit reward is 0.
    assert metrics[0].data["train_loss"] == pytest.approx(0.6931, abs=1e-3)
    assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id)] == [2]
    reply = client.chat.completions.create(
        model=done.fine_tuned_model, max_tokens=3, messages=[{"role": "user", "content": "is it blue?"}]
    )
    assert reply.model == done.fine_tuned_model and reply.usage.completion_tokens <= 3


def _pair(i):
    return factory.preference_pairs(12, seed=3, style="openai")[i]


@pytest.mark.parametrize(
    "broken, message",
    [
        (
            {k: v for k, v in _pair(0).items() if k != "input"},
            "Invalid file format. Example 3 is missing key 'input'.",
        ),
        (
            {
                **_pair(0),
                "preferred_output": [
                    {"role": "assistant", "content": "a"},
                    {"role": "assistant", "content": "b"},
                ],
            },
            "Example 3: 'preferred_output' must be an array of exactly one assistant message, got 2 messages",
        ),
        (
            {**_pair(0), "non_preferred_output": [{"role": "user", "content": "a"}]},
            "Example 3: 'non_preferred_output' must be an assistant message, got role 'user'",
        ),
        # The legacy OpenAPI names (preferred_completion / non_preferred_completion) are refused: the
        # guide and all real usage use *_output (spec section 1.8).
        (
            {
                "input": _pair(0)["input"],
                "preferred_completion": _pair(0)["preferred_output"],
                "non_preferred_completion": _pair(0)["non_preferred_output"],
            },
            "Example 3 is missing key 'preferred_output'.",
        ),
        # An SFT chat file given to a DPO job.
        (factory.color_chats(1)[0], "Example 3 is missing key 'input'."),
    ],
)
def test_preference_files_are_validated_with_openais_messages(client, broken, message):
    rows = factory.preference_pairs(12, seed=4, style="openai")
    rows[2] = broken
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=upload(client, rows).id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}},
    )
    done = wait_status(client, job.id, DONE)
    assert done.status == "failed" and done.error.code == "invalid_file_format"
    assert done.error.param == "training_file"
    assert done.error.message.startswith(
        "The job failed due to a file format error in the training file. Invalid file format. "
    )
    assert message in done.error.message, done.error.message
