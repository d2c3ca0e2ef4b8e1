"""tunesmith.migrate.mapping on job objects shaped as the SDK's ``FineTuningJob`` (parsed by the
SDK's own model): supervised / DPO through the jobs worker's mapping, reinforcement -> GRPO with
the job's grader, and every reason a job is not mapped, one line each."""

from __future__ import annotations

import json

import factory
import pytest
import yaml

openai = pytest.importorskip("openai")
pytest.importorskip("sqlalchemy")

from openai.types.fine_tuning import FineTuningJob  # noqa: E402

from tunesmith.config import load_config  # noqa: E402
from tunesmith.methods import validate  # noqa: E402
from tunesmith.migrate.mapping import MapOptions, Unmappable, job_dict, map_job, source_method  # noqa: E402

STRING_CHECK = {
    "type": "string_check",
    "name": "exact",
    "operation": "eq",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
}
LABEL_MODEL = {
    "type": "label_model",
    "name": "judge",
    "model": "o3-mini-2025-01-31",
    "input": [{"role": "user", "content": "Is {{sample.output_text}} right? {{item.answer}}"}],
    "labels": ["yes", "no"],
    "passing_labels": ["yes"],
}
# In the SDK's types a label_model grader reaches RFT inside a multi grader.
MULTI_LABEL = {
    "type": "multi",
    "name": "judged",
    "graders": {"judge": LABEL_MODEL},
    "calculate_output": "judge",
}


def sdk_job(
    method: dict | None,
    *,
    job_id="ftjob-abc",
    model="gpt-4o-mini-2024-07-18",
    status="succeeded",
    hyper=None,
    **extra,
) -> dict:
    """A job as the SDK parses OpenAI's response, back to plain data (what pull works on)."""
    body = {
        "id": job_id,
        "object": "fine_tuning.job",
        "created_at": 1700000000,
        "error": None,
        "fine_tuned_model": f"ft:{model}:acme:support:AbCd1234",
        "finished_at": 1700000500,
        "hyperparameters": hyper or {"batch_size": 4, "learning_rate_multiplier": 1.8, "n_epochs": 2},
        "model": model,
        "organization_id": "org-x",
        "result_files": [],
        "seed": 42,
        "status": status,
        "trained_tokens": 1000,
        "training_file": "file-t",
        "validation_file": None,
        "method": method,
        **extra,
    }
    return job_dict(FineTuningJob.construct(**body))  # how the SDK builds a response object


def staged(tmp_path, job_id: str, rows: list[dict]):
    run = tmp_path / "runs" / job_id
    (run / "data").mkdir(parents=True, exist_ok=True)
    factory.write_jsonl(run / "data" / "train.jsonl", rows)
    return run


def options(tiny_model_dir, **kw) -> MapOptions:
    kw.setdefault("overrides", ["train.max_length=64"])
    return MapOptions(base_models={"*": str(tiny_model_dir)}, **kw)


def test_supervised_job_maps_through_the_workers_rule(tmp_path, tiny_model_dir):
    job = sdk_job(
        {
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"batch_size": 4, "learning_rate_multiplier": 1.8, "n_epochs": 2}
            },
        }
    )
    run = staged(tmp_path, job["id"], factory.color_chats(12))
    mapped = map_job(job, run, 12, options(tiny_model_dir))
    cfg = yaml.safe_load(mapped.config.read_text())
    assert cfg["method"] == "sft" and cfg["model"]["path"] == str(tiny_model_dir)
    assert (cfg["train"]["epochs"], cfg["train"]["batch_size"], cfg["train"]["seed"]) == (2, 4, 42)
    assert cfg["train"]["lr"] == pytest.approx(2e-4 * 1.8)  # LoRA base lr x the job's multiplier
    assert cfg["train"]["save_every"] == 3 and cfg["train"]["max_length"] == 64  # 12 rows / batch 4
    assert cfg["data"]["train"] == str(run / "data" / "train.jsonl") and cfg["output_dir"] == str(run)
    assert mapped.summary["learning_rate_multiplier"] == 1.8 and mapped.notes == []


def test_a_legacy_job_and_auto_values_resolve_like_the_server(tmp_path, tiny_model_dir):
    job = sdk_job(
        None,
        hyper={"batch_size": "auto", "learning_rate_multiplier": "auto", "n_epochs": "auto"},
        status="running",
    )
    assert source_method(job)["type"] == "supervised"
    run = staged(tmp_path, job["id"], factory.color_chats(20))
    mapped = map_job(job, run, 20, options(tiny_model_dir, adapter="none"))
    cfg = yaml.safe_load(mapped.config.read_text())
    # OpenAI's epoch rule for 20 examples: 3 x 20 < 100 -> 100 // 20 = 5; batch ~0.2 % -> 1.
    assert (cfg["train"]["epochs"], cfg["train"]["batch_size"]) == (5, 1)
    assert cfg["train"]["lr"] == pytest.approx(2e-5)  # full fine-tuning base lr x 1.0
    assert any("n_epochs was 'auto'" in n for n in mapped.notes)


def test_dpo_job_keeps_beta(tmp_path, tiny_model_dir):
    job = sdk_job(
        {
            "type": "dpo",
            "dpo": {
                "hyperparameters": {
                    "batch_size": 2,
                    "learning_rate_multiplier": 0.5,
                    "n_epochs": 1,
                    "beta": 0.3,
                }
            },
        }
    )
    run = staged(tmp_path, job["id"], factory.preference_pairs(6, style="openai"))
    mapped = map_job(job, run, 6, options(tiny_model_dir))
    cfg = yaml.safe_load(mapped.config.read_text())
    assert cfg["method"] == "dpo" and cfg["preference"] == {"loss": "sigmoid", "beta": 0.3}
    assert mapped.summary["beta"] == 0.3 and cfg["train"]["lr"] == pytest.approx(1e-4)


def test_reinforcement_job_becomes_grpo_with_its_grader(tmp_path, tiny_model_dir):
    job = sdk_job(
        {
            "type": "reinforcement",
            "reinforcement": {
                "grader": STRING_CHECK,
                "hyperparameters": {
                    "batch_size": 2,
                    "learning_rate_multiplier": 2.0,
                    "n_epochs": 1,
                    "eval_interval": 3,
                    "compute_multiplier": 1.5,
                    "reasoning_effort": "medium",
                },
            },
        }
    )
    rows = [
        {"messages": [{"role": "user", "content": f"what is {i} + {i}?"}], "answer": str(2 * i)}
        for i in range(6)
    ]
    run = staged(tmp_path, job["id"], rows)
    mapped = map_job(
        job,
        run,
        6,
        options(
            tiny_model_dir, overrides=["train.max_length=64", "grpo.max_new_tokens=8", "grpo.group_size=2"]
        ),
    )
    cfg = yaml.safe_load(mapped.config.read_text())
    assert cfg["method"] == "grpo" and "preference" not in cfg
    main = cfg["grpo"]["rewards"][0]
    assert main["type"] == "grader" and main["grader"] == STRING_CHECK and main.get("weight", 1.0) == 1.0
    assert (cfg["grpo"]["max_new_tokens"], cfg["grpo"]["group_size"]) == (8, 2)  # --set kept
    assert cfg["train"]["eval_every"] == 3 and cfg["train"]["lr"] == pytest.approx(4e-4)
    assert (cfg["train"]["epochs"], cfg["train"]["batch_size"], cfg["train"]["seed"]) == (1, 2, 42)
    converted = [json.loads(line) for line in open(cfg["data"]["train"])]
    assert converted[1] == {"prompt": rows[1]["messages"], "answer": "2"}
    validate(load_config(mapped.config))  # a config tunesmith train accepts, rewards resolved


def test_a_model_grader_maps_only_with_a_local_judge(tmp_path, tiny_model_dir):
    method = {"type": "reinforcement", "reinforcement": {"grader": MULTI_LABEL, "hyperparameters": {}}}
    job = sdk_job(method)
    rows = [{"messages": [{"role": "user", "content": "2+2?"}], "answer": "4"}]
    with pytest.raises(Unmappable) as exc:
        map_job(job, staged(tmp_path, job["id"], rows), 1, options(tiny_model_dir))
    assert str(exc.value) == (
        "method.reinforcement.grader.graders.judge.model: 'o3-mini-2025-01-31' is not a "
        "local model; map it to a local judge with --judge-model (a model folder or .gguf file)"
    )
    judged = options(tiny_model_dir, judge_model=str(tiny_model_dir))
    mapped = map_job(job, staged(tmp_path, job["id"], rows), 1, judged)
    reward = yaml.safe_load(mapped.config.read_text())["grpo"]["rewards"][0]
    assert reward["grader"] == MULTI_LABEL
    assert reward["judge_model"] in (str(tiny_model_dir), {"o3-mini-2025-01-31": str(tiny_model_dir)})


@pytest.mark.parametrize(
    "case, reason",
    [
        (
            "unknown method",
            "method type 'distillation' has no tunesmith mapping (mapped: supervised, dpo, reinforcement)",
        ),
        (
            "no base",
            "base model gpt-3.5-turbo has no open model to stand in for it (add --base-model "
            "gpt-3.5-turbo=PATH, or a default --base-model PATH)",
        ),
        (
            "vision",
            "vision dataset: the training file has an image part at line 2; tunesmith trains text-only models",
        ),
        (
            "bad grader",
            "method.reinforcement.grader.operation: unknown operation 'regex'; expected one of eq, ne, "
            "like, ilike",
        ),
        (
            "answered rft",
            "reinforcement data: Invalid file format. Example 1 ends with an assistant message; a "
            "reinforcement example holds the prompt only (the model writes the answer the grader scores)",
        ),
    ],
)
def test_what_cannot_be_mapped_says_why_in_one_line(tmp_path, tiny_model_dir, case, reason):
    rows = factory.color_chats(3)
    base_models = {"*": str(tiny_model_dir)}
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}}
    job = sdk_job(method)
    if case == "unknown method":  # a method type newer than the mapper (the SDK keeps unknown strings)
        job["method"] = {"type": "distillation", "distillation": {}}
    elif case == "no base":
        job = sdk_job(method, model="gpt-3.5-turbo")
        base_models = {"gpt-4o-mini-2024-07-18": str(tiny_model_dir)}
    elif case == "vision":
        rows[1]["messages"][-2]["content"] = [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
        ]
    elif case == "bad grader":
        job = sdk_job(
            {"type": "reinforcement", "reinforcement": {"grader": {**STRING_CHECK, "operation": "regex"}}}
        )
    elif case == "answered rft":
        job = sdk_job({"type": "reinforcement", "reinforcement": {"grader": STRING_CHECK}})
    with pytest.raises(Unmappable) as exc:
        map_job(job, staged(tmp_path, job["id"], rows), 3, MapOptions(base_models=base_models))
    assert str(exc.value) == reason
