"""Reinforcement jobs without a server: the request, "auto" resolution and the GRPO mapping
(jobs/rft.py), the data checks (jobs/rft_data.py), the progress format (jobs/rft_metrics.py)
and OpenAI's SFT step message (worker.step_message)."""

from __future__ import annotations

import json

import pytest

from tunesmith.jobs import rft, rft_metrics
from tunesmith.jobs.progress import RunTail, step_message
from tunesmith.jobs.rft_data import check_rft_files, prompts_path, write_prompts
from tunesmith.jobs.spec import hyperparameters, normalise_create, resolve_method
from tunesmith.serve.protocol import APIError

LETTER = {
    "type": "string_check",
    "name": "has letter",
    "operation": "ilike",
    "input": "{{sample.output_text}}",
    "reference": "{{item.letter}}",
}
BODY = {"model": "tiny", "training_file": "file-abc"}


def _create(grader=LETTER, **hyper) -> dict:
    method = {"type": "reinforcement", "reinforcement": {"grader": grader, "hyperparameters": hyper}}
    return normalise_create({**BODY, "method": method})["method"]


def test_a_reinforcement_method_echoes_auto_and_the_grader_as_sent():
    method = _create(n_epochs=2)
    assert method == {
        "type": "reinforcement",
        "reinforcement": {
            "grader": LETTER,
            "hyperparameters": {
                "batch_size": "auto",
                "learning_rate_multiplier": "auto",
                "n_epochs": 2,
                "compute_multiplier": "auto",
                "eval_interval": "auto",
                "eval_samples": "auto",
                "reasoning_effort": "default",
            },
        },
    }
    assert hyperparameters(method) == {
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
        "n_epochs": 2,
    }


def test_auto_resolves_by_the_documented_rules():
    # 100 examples: cookbook epochs 3, batch size ~0.2 % -> 1 (power of two), 100 steps per epoch.
    h = resolve_method(_create(), 100)["reinforcement"]["hyperparameters"]
    assert h == {
        "batch_size": 1,
        "learning_rate_multiplier": 1.0,
        "n_epochs": 3,
        "compute_multiplier": 1.0,
        "eval_interval": 100,
        "eval_samples": 8,
        "reasoning_effort": "default",
    }
    h = resolve_method(_create(batch_size=4, compute_multiplier=0.5), 10)["reinforcement"]["hyperparameters"]
    assert (h["eval_interval"], h["eval_samples"]) == (3, 4)  # ceil(10 / 4) steps; 8 x 0.5 samples


@pytest.mark.parametrize("m, size", [(1.0, 8), (0.5, 4), (0.1, 2), (0.01, 2), (2, 16), (8, 64), (0.3125, 2)])
def test_compute_multiplier_sets_the_group_size(m, size):
    # clamp(round(8 m), 2, 64); 0.3125 x 8 = 2.5 rounds half to even: 2
    assert rft.group_size(m) == size


@pytest.mark.parametrize(
    "hyper, param",
    [
        ({"compute_multiplier": 0}, "compute_multiplier"),
        ({"compute_multiplier": 8.5}, "compute_multiplier"),
        ({"eval_interval": 1.5}, "eval_interval"),
        ({"eval_samples": 0}, "eval_samples"),
        ({"reasoning_effort": "auto"}, "reasoning_effort"),
        ({"beta": 0.1}, "beta"),
    ],
)
def test_out_of_range_hyperparameters_name_their_field(hyper, param):
    with pytest.raises(APIError) as info:
        _create(**hyper)
    assert info.value.param == f"method.reinforcement.hyperparameters.{param}"


def test_the_grader_is_parsed_and_never_read_from_a_file():
    with pytest.raises(APIError) as info:
        _create({**LETTER, "operation": "regex"})
    assert info.value.param == "method.reinforcement.grader.operation"
    assert info.value.message.startswith("method.reinforcement.grader.operation: unknown operation 'regex'")
    with pytest.raises(APIError) as info:
        _create("graders/rubric.json")
    assert info.value.param == "method.reinforcement.grader"


def test_a_multi_grader_becomes_one_reward_and_weight_zero_loggers():
    multi = {
        "type": "multi",
        "name": "m",
        "calculate_output": "a + b",
        "graders": {
            "a": LETTER,
            "b": {
                "type": "score_model",
                "name": "j",
                "model": "gpt-4o",
                "input": [{"role": "user", "content": "{{sample.output_text}}"}],
            },
        },
    }
    rewards = rft.grpo_rewards(multi, {"gpt-4o": "/models/judge", "unused": "/models/x"})
    assert [(r["name"], r["weight"], r.get("judge_model")) for r in rewards] == [
        ("grader", 1.0, {"gpt-4o": "/models/judge"}),
        ("grader_1", 0.0, None),
        ("grader_2", 0.0, {"gpt-4o": "/models/judge"}),
    ]
    assert rewards[1]["grader"] == LETTER
    assert rft.grpo_section({"compute_multiplier": 0.5}, LETTER, {})["group_size"] == 4


# -- data -------------------------------------------------------------------------------------------


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _row(i=0, **extra):
    return {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"q{i}"}],
        "letter": "e",
        **extra,
    }


def test_good_rows_are_rewritten_as_grpo_prompt_rows(tmp_path):
    train = _write(tmp_path / "train.jsonl", [_row(i, meta={"k": [1]}) for i in range(10)])
    check = check_rft_files(train, None, required={"letter"}, tokenizer=None, room=100)
    assert check.report.ok and check.report.n_examples == 10 and check.fitting == 10
    out = write_prompts(train)
    assert out == prompts_path(train) == tmp_path / "train.prompts.jsonl"
    first = json.loads(out.read_text().splitlines()[0])
    assert first == {"prompt": _row(0)["messages"], "letter": "e", "meta": {"k": [1]}}


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{not json", "Invalid file format. Example 4 cannot be parsed. Error: line contains invalid json: "),
        ([1], "Invalid file format. Example 4 is not a JSON object (got array)"),
        (
            _row(letter=None),
            "Invalid file format. Example 4 is missing key 'letter', which the grader reads "
            "({{item.letter}}).",
        ),
        (
            {**_row(), "messages": []},
            "Invalid file format. Example 4 needs a non-empty 'messages' array of "
            "messages, got an empty array",
        ),
        (
            _row(prompt="x"),
            "Invalid file format. Example 4 has the key 'prompt': this server carries the prompt",
        ),
        (
            _row(tools=[{"type": "function"}]),
            "Invalid file format. Example 4 has the key 'tools': tool calling",
        ),
    ],
)
def test_bad_rows_are_named_by_line(tmp_path, bad, message):
    rows = [_row(i) for i in range(11)]
    rows[3] = bad
    check = check_rft_files(
        _write(tmp_path / "t.jsonl", rows), None, required={"letter"}, tokenizer=None, room=100
    )
    error = check.report.job_error()
    assert error["code"] == "invalid_file_format" and error["param"] == "training_file"
    assert error["message"].startswith(
        "The job failed due to a file format error in the training file. " + message
    )


def test_validation_file_problems_name_the_validation_file(tmp_path):
    train = _write(tmp_path / "t.jsonl", [_row(i) for i in range(10)])
    valid = _write(tmp_path / "v.jsonl", [_row(0), {"messages": [{"role": "user", "content": "x"}]}])
    error = check_rft_files(train, valid, required={"letter"}, tokenizer=None, room=100).report.job_error()
    assert error["param"] == "validation_file" and "Example 2 is missing key 'letter'" in error["message"]


def test_prompt_lengths_are_counted_with_the_chat_template(tmp_path, tiny_tokenizer):
    rows = [_row(i) for i in range(10)] + [
        {**_row(), "messages": [{"role": "user", "content": "word " * 200}]}
    ]
    check = check_rft_files(
        _write(tmp_path / "t.jsonl", rows), None, required=set(), tokenizer=tiny_tokenizer, room=60
    )
    assert check.report.ok and (check.fitting, check.too_long, check.first_too_long) == (10, 1, 11)


# -- progress ---------------------------------------------------------------------------------------

ROW = {
    "step": 6,
    "loss": 0.01,
    "reward": 0.375,
    "reward_std": 0.2,
    "reward_grader": 0.375,
    "reward_grader_errors": 0.0,
    "completion_length": 3.9,
    "kl": 0.001,
    "zero_std_fraction": 0.5,
    "step_time_s": 0.12,
}
EVAL = {
    "eval_reward": 0.5625,
    "eval_reward_std": 0.3,
    "eval_reward_grader": 0.5625,
    "eval_reward_grader_errors": 0.125,
}


def test_rft_step_messages_follow_openais_text():
    assert rft_metrics.step_message(ROW, 18, LETTER) == "Step 6/18 , train mean reward=0.38"
    assert rft_metrics.step_message({**ROW, **EVAL}, 18, LETTER) == (
        "Step 6/18 , train mean reward=0.38, full validation mean reward=0.56, full validation mean parse "
        "error=0.12"
    )


def test_rft_event_data_and_checkpoint_metrics_carry_the_reward_statistics():
    data = rft_metrics.event_data({**ROW, **EVAL}, 18, LETTER)
    assert (data["step"], data["total_steps"], data["train_mean_reward"], data["full_valid_mean_reward"]) == (
        6,
        18,
        0.375,
        0.5625,
    )
    assert (data["train_reward_std"], data["valid_reward_std"], data["full_valid_mean_parse_error"]) == (
        0.2,
        0.3,
        0.125,
    )
    assert data["scores"] == {
        "train_reward_mean": 0.375,
        "train_reward_std": 0.2,
        "valid_reward_mean": 0.5625,
        "valid_reward_std": 0.3,
        "graders": [
            {
                "name": "has letter",
                "type": "string_check",
                "train_reward_mean": 0.375,
                "valid_reward_mean": 0.5625,
            }
        ],
    }
    assert data["errors"]["graders"][0] == {
        "name": "has letter",
        "type": "string_check",
        "train_error_mean": 0.0,
        "valid_error_mean": 0.125,
    }
    assert "full_valid_mean_reward" not in rft_metrics.event_data(ROW, 18, LETTER)
    m = rft_metrics.checkpoint_metrics({**ROW, **EVAL}, LETTER)
    assert (m["step"], m["train_reward_mean"], m["valid_reward_mean"], m["valid_reward_std"]) == (
        6,
        0.375,
        0.5625,
        0.3,
    )


def test_sft_step_message_has_openais_full_validation_loss():
    assert step_message({"step": 3, "loss": 1.234}, 30) == "Step 3/30: training loss=1.23"
    assert step_message({"step": 30, "loss": 0.031, "eval_loss": 0.1234}, 30) == (
        "Step 30/30: training loss=0.03, validation loss=0.12, full validation loss=0.12"
    )


def test_the_baseline_evaluation_is_offered_once_and_only_before_any_step(tmp_path):
    from tunesmith.jobs.rft_worker import Progress

    job = {
        "last_step": 0,
        "total_steps": None,
        "method": {"type": "reinforcement", "reinforcement": {"grader": LETTER}},
    }
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 0, **EVAL}) + "\n" + json.dumps(ROW) + "\n")
    tail = RunTail(tmp_path, job, Progress(job))
    assert [r["step"] for r in tail.read_rows()] == [6]
    assert tail.take_baseline() == (
        "Before training: full validation mean reward=0.56",
        {"step": 0, "full_valid_mean_reward": 0.5625, "valid_reward_std": 0.3},
    )
    assert tail.take_baseline() is None
    resumed = RunTail(tmp_path, {**job, "last_step": 6}, Progress(job))  # a worker resuming after step 6
    resumed.read_rows()
    assert resumed.take_baseline() is None
