"""Jobs that really train (tiny Llama, a worker thread, ``python -m tunesmith train``
subprocesses), driven through the official SDK: the status machine and its event texts, metrics
events, checkpoints, the results CSV, ft: models answering chat, validation failures, and
pause / resume / cancel of a running job."""

from __future__ import annotations

import csv
import io
import re

import openai
import pytest
from jobs_harness import chat_rows, service_fixtures, upload, wait_for, wait_status

pytest.importorskip("fastapi")
FT = re.compile(r"^ft:[^:]+:[^:]+:[^:]*:[A-Za-z0-9]{8}$")
DONE = ("succeeded", "failed", "cancelled")


svc, client = service_fixtures("life", workers=1, poll_interval=0.2, train_overrides=["train.max_length=128"])


def _events(client, job_id):
    return list(client.fine_tuning.jobs.list_events(job_id, limit=100))


def test_a_job_trains_end_to_end(svc, client):
    train, valid = upload(client, chat_rows(12, seed=1)), upload(client, chat_rows(10, seed=2), "v.jsonl")
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=train.id,
        validation_file=valid.id,
        suffix="colors",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4}}},
    )
    done = wait_status(client, job.id, DONE)
    assert done.status == "succeeded", done.error
    assert FT.match(done.fine_tuned_model) and done.fine_tuned_model.startswith("ft:tiny:personal:colors:")
    assert (
        done.finished_at >= done.created_at
        and isinstance(done.trained_tokens, int)
        and done.trained_tokens > 0
    )
    h = done.method.supervised.hyperparameters
    assert (h.n_epochs, h.batch_size, h.learning_rate_multiplier) == (2, 4, 1.0)
    assert done.hyperparameters.model_dump() == h.model_dump()

    events = _events(client, job.id)[::-1]  # oldest first
    texts = [e.message for e in events if e.type == "message"]
    assert texts[:4] == [
        f"Created fine-tuning job: {job.id}",
        f"Validating training file: {train.id} and validation file: {valid.id}",
        "Files validated, moving job to queued state",
        "Fine-tuning job started",
    ]
    assert texts[-2:] == [
        f"New fine-tuned model created: {done.fine_tuned_model}",
        "The job has successfully completed",
    ]
    metrics = [e for e in events if e.type == "metrics"]
    steps_per_epoch = 3  # ceil(12 / 4)
    assert [e.data["step"] for e in metrics] == list(range(1, 2 * steps_per_epoch + 1))
    assert all(e.data["total_steps"] == 6 for e in metrics)
    assert metrics[0].message.startswith("Step 1/6: training loss=")
    assert "validation loss=" in metrics[2].message and "valid_loss" in metrics[2].data  # end of epoch 1

    rows = list(csv.reader(io.StringIO(client.files.content(done.result_files[0]).read().decode())))
    assert rows[0] == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 7))
    for r, e in zip(rows[1:], metrics):
        assert abs(float(r[1]) - e.data["train_loss"]) < 1e-6
    assert rows[3][3] != "" and rows[1][3] == ""
    assert client.files.retrieve(done.result_files[0]).purpose == "fine-tune-results"

    ckpts = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert [c.step_number for c in ckpts] == [6, 3]  # one per epoch, newest first
    for c in ckpts:
        assert c.fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-{c.step_number}"
        assert set(c.metrics.model_dump()) == {
            "step",
            "train_loss",
            "train_mean_token_accuracy",
            "valid_loss",
            "valid_mean_token_accuracy",
            "full_valid_loss",
            "full_valid_mean_token_accuracy",
        }
        assert c.metrics.valid_loss is not None and c.fine_tuning_job_id == job.id

    assert done.fine_tuned_model in [m.id for m in client.models.list()]
    TRAINED.update(job=done, checkpoints=ckpts)


TRAINED: dict = {}


def test_continued_fine_tuning_of_an_own_model_and_a_shared_checkpoint(svc, client):
    """``model="ft:…"``: the job trains the parent's base from the parent's adapter (its final
    one, or a checkpoint's), with the parent's adapter shape; another project may start from a
    checkpoint only once it is shared with it (before, the same 400 as a missing model)."""
    import yaml

    done, ckpts = TRAINED["job"], TRAINED["checkpoints"]
    step3 = ckpts[1].fine_tuned_model_checkpoint
    one_step = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 10}}}
    b = svc.client(svc.key_b)
    b_train = upload(b, chat_rows(10, seed=7))
    with pytest.raises(openai.BadRequestError) as hidden:
        b.fine_tuning.jobs.create(model=step3, training_file=b_train.id)
    fake = done.fine_tuned_model[:-8] + "NotHere1:ckpt-step-3"
    with pytest.raises(openai.BadRequestError) as missing:
        b.fine_tuning.jobs.create(model=fake, training_file=b_train.id)
    assert hidden.value.body == {
        **missing.value.body,
        "message": missing.value.body["message"].replace(fake, step3),
    }
    assert hidden.value.param == "model" and "not available for fine-tuning" in hidden.value.message

    admin_key, _ = svc.store.create_key("alpha", admin=True)
    beta = svc.store.project_for_key(svc.key_b)["id"]
    svc.client(admin_key).fine_tuning.checkpoints.permissions.create(step3, project_ids=[beta])
    helper = svc.start_worker()  # the two jobs train side by side
    own = client.fine_tuning.jobs.create(
        model=done.fine_tuned_model,
        suffix="more",
        method=one_step,
        training_file=upload(client, chat_rows(10, seed=6)).id,
    )
    shared = b.fine_tuning.jobs.create(model=step3, training_file=b_train.id, method=one_step)
    assert own.model == done.fine_tuned_model and shared.model == step3
    parent_run = svc.settings.run_dir(done.id)
    parent_adapter = yaml.safe_load((parent_run / "config.resolved.yaml").read_text())["adapter"]
    for job, client_, init in (
        (own, client, parent_run / "final"),
        (shared, b, parent_run / "served-checkpoints" / "step-000003"),
    ):
        finished = wait_status(client_, job.id, DONE)
        assert finished.status == "succeeded", finished.error
        assert FT.match(finished.fine_tuned_model) and finished.fine_tuned_model.startswith(
            "ft:tiny:personal:"
        )
        cfg = yaml.safe_load((svc.settings.run_dir(job.id) / "config.resolved.yaml").read_text())
        assert cfg["model"]["path"] == str(svc.settings.base_models["tiny"])
        assert cfg["adapter"] == {**parent_adapter, "init_from": str(init)}
        assert _ask(client_, finished.fine_tuned_model, max_tokens=2).model == finished.fine_tuned_model
        if job is own:
            assert finished.fine_tuned_model.startswith("ft:tiny:personal:more:")
            assert finished.fine_tuned_model in [m.id for m in client.models.list()]
    helper.stop_event.set()


def _ask(client, model, **kw):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "what color is the sky?"}], **kw
    )


def test_ft_models_are_served_with_streaming_usage_and_logprobs(svc, client):
    """The ft: model and a checkpoint answer through tunesmith.serve over the shared base."""
    done, ckpts = TRAINED["job"], TRAINED["checkpoints"]
    ft = done.fine_tuned_model
    reply = _ask(client, ft, max_tokens=4, temperature=0, logprobs=True)
    assert (
        reply.model == ft
        and reply.object == "chat.completion"
        and reply.choices[0].message.role == "assistant"
    )
    assert reply.choices[0].finish_reason in ("stop", "length") and 1 <= reply.usage.completion_tokens <= 4
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    # Streaming: the deltas join to the non-streamed greedy text; usage comes in the last chunk.
    chunks = list(
        _ask(client, ft, max_tokens=4, temperature=0, stream=True, stream_options={"include_usage": True})
    )
    assert all(c.model == ft and c.object == "chat.completion.chunk" for c in chunks)
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == reply.choices[0].message.content
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == reply.usage.model_dump()
    # The adapter is really applied: the base scores the same greedy tokens differently.
    base = _ask(client, "tiny", max_tokens=4, temperature=0, logprobs=True)
    assert base.model == "tiny"
    ft_lp = [t.logprob for t in reply.choices[0].logprobs.content]
    base_lp = [t.logprob for t in base.choices[0].logprobs.content]
    assert max(abs(x - y) for x, y in zip(ft_lp, base_lp)) > 1e-5

    # A checkpoint is served as an adapter too (exported once from its trainable tensors).
    step3 = ckpts[1].fine_tuned_model_checkpoint
    text = client.completions.create(model=step3, prompt="the sky", max_tokens=3, temperature=0)
    assert text.object == "text_completion" and text.model == step3 and text.usage.completion_tokens <= 3
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=step3, prompt="the sky", max_tokens=3, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == text.choices[0].text
    # The export names the tensors as PEFT does: the last checkpoint's export equals final/.
    from safetensors.torch import load_file

    row = svc.store.get_job(None, done.id)
    last = load_file(svc.inference.locate(row, 6) / "adapter_model.safetensors")
    final = load_file(svc.settings.run_dir(done.id) / "final" / "adapter_model.safetensors")
    assert last.keys() == final.keys() and all(last[k].equal(final[k]) for k in final)
    served = svc.inference.ensure("tiny", None, None).server
    assert {ft, step3} <= set(served.peft_adapters())  # one base, both adapters in it
    # With room for one adapter, each request evicts the other (least recently used) and a
    # request for an evicted model loads it again.
    svc.inference.max_adapters = 1
    try:
        assert (
            _ask(client, ft, max_tokens=4, temperature=0).choices[0].message.content
            == reply.choices[0].message.content
        )
        served.wait_idle_unloads()
        assert served.peft_adapters() == [ft]
        assert (
            client.completions.create(model=step3, prompt="the sky", max_tokens=3, temperature=0)
            .choices[0]
            .text
            == text.choices[0].text
        )
        served.wait_idle_unloads()
        assert served.peft_adapters() == [step3]
    finally:
        svc.inference.max_adapters = 16
    _ask(client, ft, max_tokens=1)

    # OpenAI errors from the serving layer keep the envelope; another project sees a 404.
    with pytest.raises(openai.BadRequestError) as info:
        _ask(client, ft, temperature=5)
    assert info.value.param == "temperature"
    with pytest.raises(openai.NotFoundError):
        _ask(svc.client(svc.key_b), ft, stream=True)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model=ft + ":ckpt-step-4", prompt="x")  # no such checkpoint

    assert client.models.delete(ft).deleted is True
    for model in (ft, step3):
        with pytest.raises(openai.NotFoundError):
            _ask(client, model)
    served.wait_idle_unloads()
    assert ft not in served.peft_adapters() and step3 not in served.peft_adapters()
    assert ft not in [m.id for m in client.models.list()]
    with pytest.raises(openai.BadRequestError):  # a finished job cannot be paused
        client.fine_tuning.jobs.pause(done.id)


def test_too_few_examples_fail_validation_with_openais_error(client):
    job = client.fine_tuning.jobs.create(model="tiny", training_file=upload(client, chat_rows(9)).id)
    done = wait_status(client, job.id, DONE)
    assert done.status == "failed" and done.finished_at is None and done.fine_tuned_model is None
    assert (done.error.code, done.error.param, done.error.message) == (
        "invalid_n_examples",
        "training_file",
        "Training file has 9 example(s), but must have at least 10 examples",
    )
    last = _events(client, job.id)[0]
    assert last.level == "error" and last.data == {
        "error_code": "invalid_n_examples",
        "error_param": "training_file",
    }


@pytest.mark.parametrize(
    "bad, which, where",
    [
        (
            {"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
            "training",
            "Example 3, message 1",
        ),
        ("not json", "training", "Example 3 cannot be parsed"),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi", "weight": 1},
                    {"role": "assistant", "content": "yo"},
                ]
            },
            "validation",
            'Example 3, message 1 contains an extra "weight"',
        ),
    ],
)
def test_malformed_lines_fail_with_a_1_based_example(client, bad, which, where):
    rows = chat_rows(12)
    broken = [*rows[:2], bad, *rows[3:]]
    body = b"".join(
        (r if isinstance(r, str) else __import__("json").dumps(r)).encode() + b"\n" for r in broken
    )
    good = upload(client, rows)
    bad_file = client.files.create(file=("x.jsonl", body, "application/jsonl"), purpose="fine-tune")
    kwargs = (
        {"training_file": bad_file.id}
        if which == "training"
        else {"training_file": good.id, "validation_file": bad_file.id}
    )
    done = wait_status(client, client.fine_tuning.jobs.create(model="tiny", **kwargs).id, DONE)
    assert done.status == "failed" and done.error.code == "invalid_file_format"
    assert done.error.param == f"{which}_file"
    assert done.error.message.startswith(
        f"The job failed due to a file format error in the {which} file. Invalid file format. "
    )
    assert where in done.error.message


def test_pause_resume_and_cancel_a_running_job(svc, client):
    """Pause stops a running job's training within seconds, resume restarts it (new steps are
    reported, none twice), cancel stops it again for good. (That a resumed job then finishes with
    the uninterrupted result is proven by tests/integration/test_jobs_fault.py.)"""
    train = upload(client, chat_rows(24, seed=5))
    # 960 steps: far more than run before the cancel. (120 were not: a tiny step takes a few ms,
    # and the rest of the run could finish while the cancel reached the worker.)
    total = 24 * 40
    hyper = {"n_epochs": 40, "batch_size": 1}
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=train.id,
        method={"type": "supervised", "supervised": {"hyperparameters": hyper}},
    )
    wait_for(lambda: any(e.type == "metrics" for e in _events(client, job.id)), 180, 0.1, "first step")
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    # the training process is stopped and the lease released within seconds
    wait_for(lambda: svc.store.get_job(None, job.id)["worker_id"] is None, 15, 0.1, "worker to let go")
    paused_at = svc.store.get_job(None, job.id)["last_step"]
    assert 1 <= paused_at < total and client.fine_tuning.jobs.retrieve(job.id).status == "paused"
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"  # idempotent
    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    wait_for(
        lambda: svc.store.get_job(None, job.id)["last_step"] > paused_at, 180, 0.05, "steps after resume"
    )
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"

    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    wait_for(lambda: svc.store.get_job(None, job.id)["worker_id"] is None, 15, 0.1, "worker to let go")
    stopped_at = svc.store.get_job(None, job.id)["last_step"]
    final = client.fine_tuning.jobs.retrieve(job.id)
    assert final.status == "cancelled" and final.fine_tuned_model is None and stopped_at < total
    steps = sorted(e.data["step"] for e in _events(client, job.id) if e.type == "metrics")
    assert steps == list(range(1, stopped_at + 1))  # each step reported once across both runs
    texts = [e.message for e in _events(client, job.id)]
    assert "Fine-tuning job paused" in texts and "Fine-tuning job resumed" in texts
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"  # idempotent
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.resume(job.id)
