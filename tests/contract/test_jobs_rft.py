"""``method: reinforcement`` jobs and the grader routes through the official SDK.

The learnable task: "reply with something containing the letter e" on the tiny random Llama
(graded by a string_check ``ilike`` against ``{{item.letter}}``). Its untrained 4-token replies
contain an "e" about 16 % of the time, which gives GRPO groups with reward variance to learn
from; 18 steps at a learning rate of 1e-2 (LoRA 2e-4 × 50, the LM head trained too) take the
validation reward to about 0.9.
"""

from __future__ import annotations

import csv
import io
import random
import re

import factory
import pytest
import yaml
from jobs_harness import service_fixtures, upload, wait_status

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
DONE = ("succeeded", "failed", "cancelled")
LETTER = {
    "type": "string_check",
    "name": "has letter",
    "operation": "ilike",
    "input": "{{sample.output_text}}",
    "reference": "{{item.letter}}",
}

svc, client = service_fixtures(
    "rft",
    workers=1,
    poll_interval=0.2,
    train_overrides=["train.max_length=64", "grpo.max_new_tokens=4", "adapter.modules_to_save=['lm_head']"],
)


def rft_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "messages": [
                {
                    "role": "user",
                    "content": f"{rng.choice(factory.WORDS)} {rng.choice(factory.WORDS)} "
                    "in a word with an e?",
                }
            ],
            "letter": "e",
        }
        for _ in range(n)
    ]


def rft_method(grader: dict | None = None, **hyper) -> dict:
    return {"type": "reinforcement", "reinforcement": {"grader": grader or LETTER, "hyperparameters": hyper}}


def test_an_rft_job_trains_and_raises_the_reward(svc, client):
    train, valid = upload(client, rft_rows(24, 1)), upload(client, rft_rows(8, 2))
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=train.id,
        validation_file=valid.id,
        suffix="letters",
        seed=3,
        method=rft_method(
            n_epochs=3,
            batch_size=4,
            learning_rate_multiplier=50,
            compute_multiplier=1,
            eval_interval=6,
            reasoning_effort="low",
        ),
    )
    h = job.method.reinforcement.hyperparameters
    assert job.method.type == "reinforcement" and job.method.reinforcement.grader.type == "string_check"
    assert (h.eval_samples, h.reasoning_effort, h.n_epochs) == ("auto", "low", 3)
    done = wait_status(client, job.id, DONE, timeout=300)
    assert done.status == "succeeded", done.error
    h = done.method.reinforcement.hyperparameters
    assert (h.n_epochs, h.batch_size, h.compute_multiplier, h.eval_interval, h.eval_samples) == (
        3,
        4,
        1,
        6,
        8,
    )

    # The run the worker started: GRPO with the grader as its reward, lr = 2e-4 x 50.
    cfg = yaml.safe_load((svc.settings.run_dir(job.id) / "config.resolved.yaml").read_text())
    assert cfg["method"] == "grpo" and cfg["grpo"]["group_size"] == 8
    assert cfg["grpo"]["rewards"][0]["grader"] == LETTER and cfg["grpo"]["rewards"][0]["type"] == "grader"
    assert (cfg["train"]["eval_every"], cfg["train"]["save_every"]) == (6, 6)
    assert cfg["train"]["lr"] == pytest.approx(1e-2)

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=200))[::-1]
    metrics = [e for e in events if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == list(range(1, 19))
    assert all(
        re.fullmatch(r"Step \d+/18 , train mean reward=\d\.\d\d", e.message)
        for e in metrics
        if e.data["step"] % 6
    )
    last = metrics[-1]
    assert re.fullmatch(
        r"Step 18/18 , train mean reward=\d\.\d\d, full validation mean reward=\d\.\d\d, "
        r"full validation mean parse error=0\.00",
        last.message,
    )
    scores = last.data["scores"]
    assert scores["train_reward_mean"] == last.data["train_mean_reward"]
    assert scores["valid_reward_mean"] == last.data["full_valid_mean_reward"]
    assert scores["graders"] == [
        {
            "name": "has letter",
            "type": "string_check",
            "train_reward_mean": scores["train_reward_mean"],
            "valid_reward_mean": scores["valid_reward_mean"],
        }
    ]
    assert "train_reward_std" in last.data and "valid_reward_std" in last.data
    baseline = next(
        e for e in events if e.message.startswith("Before training: full validation mean reward=")
    )
    # The reward rose: validation (the same 8 prompts, sampled with the same seed) before vs after.
    assert last.data["full_valid_mean_reward"] > baseline.data["full_valid_mean_reward"] + 0.3

    ckpts = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert [c.step_number for c in ckpts] == [18, 12, 6]
    m = ckpts[0].metrics.model_dump()
    assert m["valid_reward_mean"] == last.data["full_valid_mean_reward"]
    assert m["train_reward_mean"] == last.data["train_mean_reward"] and "valid_reward_std" in m
    assert m["scores"]["graders"][0]["name"] == "has letter"

    results = client.files.content(done.result_files[0]).read().decode()
    rows = list(csv.DictReader(io.StringIO(results)))
    assert (
        list(rows[0])
        == [
            "step",
            "train_loss",
            "train_reward_mean",
            "train_reward_std",
            "valid_reward_mean",
            "valid_reward_std",
        ]
        and len(rows) == 18
    )
    reply = client.chat.completions.create(
        model=done.fine_tuned_model,
        max_tokens=4,
        messages=[{"role": "user", "content": "the cat in a word with an e?"}],
    )
    assert reply.model == done.fine_tuned_model


def test_a_multi_grader_reports_each_sub_grader(svc, client):
    multi = {
        "type": "multi",
        "name": "combo",
        "calculate_output": "0.5 * e + 0.5 * short",
        "graders": {
            "e": LETTER,
            "short": {
                "type": "text_similarity",
                "name": "short",
                "evaluation_metric": "fuzzy_match",
                "input": "{{sample.output_text}}",
                "reference": "yes",
            },
        },
    }
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=upload(client, rft_rows(10, 3)).id,
        method=rft_method(multi, n_epochs=1, batch_size=5),
    )
    done = wait_status(client, job.id, DONE, timeout=300)
    assert done.status == "succeeded", done.error
    cfg = yaml.safe_load((svc.settings.run_dir(job.id) / "config.resolved.yaml").read_text())
    assert [(r["name"], r["weight"]) for r in cfg["grpo"]["rewards"]] == [
        ("grader", 1.0),
        ("grader_1", 0.0),
        ("grader_2", 0.0),
    ]
    event = [e for e in client.fine_tuning.jobs.list_events(job.id, limit=50) if e.type == "metrics"][0]
    graders = event.data["scores"]["graders"]
    assert [(g["name"], g["type"]) for g in graders] == [
        ("combo", "multi"),
        ("e", "string_check"),
        ("short", "text_similarity"),
    ]
    # The multi reward is the formula over its sub-graders' means (a linear formula: exact on means).
    assert graders[0]["train_reward_mean"] == pytest.approx(
        0.5 * graders[1]["train_reward_mean"] + 0.5 * graders[2]["train_reward_mean"], abs=1e-6
    )


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, param",
    [
        (rft_method({**LETTER, "operation": "regex"}), "method.reinforcement.grader.operation"),
        (rft_method({**LETTER, "reference": "{{item.}}"}), "method.reinforcement.grader.reference"),
        (
            rft_method(
                {
                    "type": "multi",
                    "name": "m",
                    "calculate_output": "__import__('os')",
                    "graders": {"a": LETTER},
                }
            ),
            "method.reinforcement.grader.calculate_output",
        ),
        (
            rft_method(
                {
                    "type": "score_model",
                    "name": "judge",
                    "model": "gpt-4o-2024-08-06",
                    "input": [{"role": "user", "content": "grade {{sample.output_text}}"}],
                }
            ),
            "method.reinforcement.grader.model",
        ),
        (
            rft_method(
                {
                    "type": "text_similarity",
                    "name": "c",
                    "evaluation_metric": "cosine",
                    "input": "{{sample.output_text}}",
                    "reference": "e",
                }
            ),
            "method.reinforcement.grader.evaluation_metric",
        ),
        (rft_method("/etc/passwd"), "method.reinforcement.grader"),
        ({"type": "reinforcement", "reinforcement": {"hyperparameters": {}}}, "method.reinforcement.grader"),
        (
            {
                "type": "reinforcement",
                "reinforcement": {"grader": LETTER, "response_format": {"type": "json_schema"}},
            },
            "method.reinforcement.response_format",
        ),
        (rft_method(compute_multiplier=0), "method.reinforcement.hyperparameters.compute_multiplier"),
        (rft_method(eval_interval=0), "method.reinforcement.hyperparameters.eval_interval"),
        (rft_method(reasoning_effort="max"), "method.reinforcement.hyperparameters.reasoning_effort"),
        (rft_method(beta=0.1), "method.reinforcement.hyperparameters.beta"),
    ],
)
def test_invalid_rft_requests_are_400_naming_the_field(svc, client, method, param):
    train = upload(client, rft_rows(10, 4))
    before = len(list(client.fine_tuning.jobs.list(limit=100)))
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(model="tiny", training_file=train.id, method=method)
    assert info.value.status_code == 400 and info.value.param == param, info.value.body
    assert info.value.body["type"] == "invalid_request_error"
    assert len(list(client.fine_tuning.jobs.list(limit=100))) == before  # no job was created


def test_a_python_grader_without_bubblewrap_is_a_clear_400(svc, client):
    from tunesmith.graders import SandboxConfig

    python = {"type": "python", "name": "py", "source": "def grade(sample, item):\n    return 1.0\n"}
    saved = svc.settings.grader_sandbox
    svc.settings.grader_sandbox = SandboxConfig(bwrap_path="/nonexistent/bwrap")
    try:
        with pytest.raises(openai.BadRequestError) as info:
            client.fine_tuning.jobs.create(
                model="tiny", training_file=upload(client, rft_rows(10, 5)).id, method=rft_method(python)
            )
        with pytest.raises(openai.BadRequestError) as run:
            client.fine_tuning.alpha.graders.run(grader=python, model_sample="x")
    finally:
        svc.settings.grader_sandbox = saved
    assert info.value.param == "method.reinforcement.grader" and run.value.param == "grader"
    assert "bubblewrap" in info.value.message and "cannot run a python grader here" in info.value.message


def _rows_with(line3: dict) -> list[dict]:
    rows = rft_rows(12, 6)
    rows[2] = line3
    return rows


@pytest.mark.parametrize(
    "row3, code, message",
    [
        (
            {"messages": [{"role": "user", "content": "hi"}]},
            "invalid_file_format",
            "The job failed due to a file format error in the training file. Invalid file format. Example 3 is "
            "missing key 'letter', which the grader reads ({{item.letter}}).",
        ),
        (
            {"letter": "e"},
            "invalid_file_format",
            "The job failed due to a file format error in the training file. Invalid file format. Example 3 is "
            "missing key 'messages'.",
        ),
        (
            {
                "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "e"}],
                "letter": "e",
            },
            "invalid_file_format",
            "The job failed due to a file format error in the training file. Invalid file format. Example 3 ends "
            "with an assistant message; a reinforcement example holds the prompt only (the model writes the answer "
            "the grader scores)",
        ),
        (
            {"messages": [{"role": "bot", "content": "hi"}], "letter": "e"},
            "invalid_file_format",
            "The job failed due to a file format error in the training file. Invalid file format. Example 3, "
            "message 1 has unrecognized role 'bot'; expected system, user, assistant or tool (or developer)",
        ),
    ],
)
def test_rft_files_are_validated_naming_the_line(client, row3, code, message):
    job = client.fine_tuning.jobs.create(
        model="tiny", training_file=upload(client, _rows_with(row3)).id, method=rft_method()
    )
    done = wait_status(client, job.id, DONE)
    assert done.status == "failed" and done.error.code == code and done.error.param == "training_file"
    assert done.error.message == message


def test_too_few_rft_examples_is_invalid_n_examples(client):
    job = client.fine_tuning.jobs.create(
        model="tiny", training_file=upload(client, rft_rows(9, 7)).id, method=rft_method()
    )
    done = wait_status(client, job.id, DONE)
    assert done.status == "failed" and done.error.code == "invalid_n_examples"


# -- graders/validate and graders/run ----------------------------------------------------------------

SIMILAR = {
    "type": "text_similarity",
    "name": "sim",
    "evaluation_metric": "fuzzy_match",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
}
SCORE = {
    "type": "score_model",
    "name": "judge",
    "model": "tiny",
    "input": [{"role": "user", "content": "Score 0 to 1: {{sample.output_text}}"}],
}
LABEL = {
    "type": "label_model",
    "name": "label",
    "model": "tiny",
    "labels": ["good", "bad"],
    "passing_labels": ["good"],
    "input": [{"role": "user", "content": "good or bad? {{sample.output_text}}"}],
}


@pytest.mark.parametrize(
    "grader, sample, item, reward",
    [
        (LETTER, "Yes", {"letter": "e"}, 1.0),
        (LETTER, "no", {"letter": "e"}, 0.0),
        (SIMILAR, "Paris", {"answer": "Paris"}, 1.0),
        (
            {"type": "multi", "name": "m", "calculate_output": "2 * a", "graders": {"a": LETTER}},
            "e",
            {"letter": "e"},
            2.0,
        ),
    ],
)
def test_graders_run_and_validate_through_the_sdk(client, grader, sample, item, reward):
    out = client.fine_tuning.alpha.graders.run(grader=grader, model_sample=sample, item=item)
    assert out.reward == reward and out.metadata.type == grader["type"]
    assert out.metadata.errors.invalid_variable_error is False
    assert client.fine_tuning.alpha.graders.validate(grader=grader).grader.type == grader["type"]


def test_graders_run_reports_a_missing_item_field_as_openai_does(client):
    out = client.fine_tuning.alpha.graders.run(grader=LETTER, model_sample="e", item={})
    assert out.reward == 0.0 and out.metadata.errors.invalid_variable_error is True


def test_a_python_grader_runs_in_the_sandbox(client):
    from tunesmith.graders.sandbox import available_backends

    if not available_backends()["bwrap"]:
        pytest.skip("bubblewrap is not available here: python graders are refused (tested above)")
    python = {
        "type": "python",
        "name": "py",
        "source": "def grade(sample, item):\n    return len(sample['output_text']) / item['n']\n",
    }
    out = client.fine_tuning.alpha.graders.run(grader=python, model_sample="abcd", item={"n": 8})
    assert out.reward == 0.5 and out.metadata.type == "python"
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.alpha.graders.validate(grader={**python, "source": "def grade(:\n"})
    assert info.value.param == "grader.source"


@pytest.mark.parametrize("grader", [SCORE, LABEL])
def test_model_graders_run_on_the_local_judge(client, grader):
    # The tiny random model is the judge ("tiny", an allow-listed base, judges under its name): its
    # reply is noise, so the grade is a parse error, reported as OpenAI reports one (200, flag set).
    out = client.fine_tuning.alpha.graders.run(grader=grader, model_sample="fine")
    assert out.metadata.type == grader["type"]
    assert out.reward == 0.0 and out.metadata.errors.api_model_grader_parse_error is True
    assert out.api_model_grader_token_usage_per_model["tiny"]["prompt_tokens"] > 0
    assert client.fine_tuning.alpha.graders.validate(grader=grader).grader.type == grader["type"]


@pytest.mark.parametrize(
    "body, param",
    [
        ({"grader": {**LETTER, "operation": "regex"}, "model_sample": "x"}, "grader.operation"),
        ({"grader": {**SCORE, "model": "gpt-4o"}, "model_sample": "x"}, "grader.model"),
        ({"grader": LETTER}, "model_sample"),
        ({"grader": LETTER, "model_sample": "x", "item": [1]}, "item"),
        ({"grader": LETTER, "model_sample": "x", "extra": 1}, "extra"),
    ],
)
def test_graders_run_refuses_bad_requests_in_the_envelope(svc, body, param):
    import httpx2 as httpx

    r = httpx.post(
        f"{svc.base_url}/fine_tuning/alpha/graders/run",
        json=body,
        headers={"Authorization": f"Bearer {svc.key_a}"},
    )
    assert r.status_code == 400 and r.headers["x-should-retry"] == "false"
    assert r.json()["error"]["param"] == param and r.json()["error"]["type"] == "invalid_request_error"


def test_grader_routes_need_a_key(svc):
    import httpx2 as httpx

    r = httpx.post(f"{svc.base_url}/fine_tuning/alpha/graders/validate", json={"grader": LETTER})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
