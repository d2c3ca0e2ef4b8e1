"""The migration kit end to end, with tunesmith's own jobs server standing in for OpenAI (it
speaks the same API; no network): jobs trained on server A are pulled (files, configs, the
manifest of what could not be mapped), one pulled config is trained locally, the jobs are pushed
to server B (idempotently), A's ``ft:`` model's answers are recorded (resumably, through 429 /
500 retries), and ``tunesmith eval --against`` compares the local model with the recording.

Every command runs through ``tunesmith.cli.main`` and the official ``openai`` SDK."""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from pathlib import Path

import factory
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "contract"))
pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from jobs_harness import Service, upload, wait_status  # noqa: E402

from tunesmith.cli import main  # noqa: E402

DONE = ("succeeded", "failed", "cancelled")
SET = "train.max_length=64"
MULTI_LABEL = {
    "type": "multi",
    "name": "judged",
    "calculate_output": "judge",
    "graders": {
        "judge": {
            "type": "label_model",
            "name": "judge",
            "model": "o3-mini-2025-01-31",
            "labels": ["yes", "no"],
            "passing_labels": ["yes"],
            "input": [{"role": "user", "content": "{{sample.output_text}} ok?"}],
        }
    },
}
COLOR_CHECK = {
    "type": "string_check",
    "name": "color",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "ilike",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    """Server A with a succeeded SFT job and six more jobs (DPO; a base the pull has no open
    model for; an expired training file; a cancelled job; an RFT job with a string_check grader,
    created through the API; an RFT job whose grader needs a judge); server B empty, with no
    worker."""
    root = tmp_path_factory.mktemp("migrate")
    (root / "a").mkdir()
    (root / "b").mkdir()
    a = Service(
        root / "a",
        {"tiny": tiny_model_dir, "tiny2": tiny_model_dir},
        poll_interval=0.2,
        train_overrides=[SET],
    )
    b = Service(root / "b", {"tiny": tiny_model_dir}, poll_interval=0.2, train_overrides=[SET])
    ca = a.client()
    jobs = {}
    sft_rows = factory.color_chats(12, seed=1)
    train, valid = upload(ca, sft_rows), upload(ca, factory.color_chats(4, seed=2), "valid.jsonl")
    jobs["sft"] = ca.fine_tuning.jobs.create(
        model="tiny",
        training_file=train.id,
        validation_file=valid.id,
        suffix="support",
        seed=7,
        metadata={"team": "cx"},
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 2}
            },
        },
    ).id
    a.start_worker()
    done = wait_status(ca, jobs["sft"], DONE)
    a.stop_workers()
    assert done.status == "succeeded", done.error
    pairs = upload(ca, factory.preference_pairs(10, seed=1, style="openai"), "pairs.jsonl")
    jobs["dpo"] = ca.fine_tuning.jobs.create(
        model="tiny",
        training_file=pairs.id,
        method={
            "type": "dpo",
            "dpo": {
                "hyperparameters": {
                    "beta": 0.25,
                    "n_epochs": 1,
                    "batch_size": 5,
                    "learning_rate_multiplier": 0.5,
                }
            },
        },
    ).id
    jobs["other_base"] = ca.fine_tuning.jobs.create(model="tiny2", training_file=train.id).id
    gone = upload(ca, sft_rows, "gone.jsonl")
    jobs["expired"] = ca.fine_tuning.jobs.create(model="tiny", training_file=gone.id).id
    assert ca.files.delete(gone.id).deleted
    jobs["cancelled"] = ca.fine_tuning.jobs.create(model="tiny", training_file=train.id).id
    ca.fine_tuning.jobs.cancel(jobs["cancelled"])
    rft_rows = [
        {"messages": [{"role": "user", "content": f"what color is the {t}?"}], "answer": c}
        for t, c in sorted(factory.COLORS.items())[:10]
    ]
    jobs["rft_live"] = ca.fine_tuning.jobs.create(
        model="tiny",
        training_file=upload(ca, rft_rows, "rft.jsonl").id,
        seed=5,
        method={
            "type": "reinforcement",
            "reinforcement": {
                "grader": COLOR_CHECK,
                "hyperparameters": {"n_epochs": 1, "batch_size": 2, "compute_multiplier": 0.25},
            },
        },
    ).id
    jobs["rft"] = _rft_job(a, ca, done.organization_id)
    yield {"a": a, "b": b, "jobs": jobs, "sft": done, "root": root, "sft_rows": sft_rows}
    a.close()
    b.close()


def _rft_job(svc, client, project: str) -> str:
    """A reinforcement job written into A's store as the API would hold it: its label_model
    grader's judge (an OpenAI model) exists on no local server, so no tunesmith server would
    create it; the SDK lists it like any other."""
    rows = [
        {"messages": [{"role": "user", "content": f"what color is the {t}?"}], "answer": c}
        for t, c in sorted(factory.COLORS.items())[:10]
    ]
    file = upload(client, rows, "rft.jsonl")
    method = {
        "type": "reinforcement",
        "reinforcement": {
            "grader": MULTI_LABEL,
            "hyperparameters": {"n_epochs": 1, "batch_size": 2, "learning_rate_multiplier": 1.0},
        },
    }
    row = {
        "id": "ftjob-rft" + "x" * 19,
        "project_id": project,
        "created_at": int(time.time()),
        "model": "tiny",
        "training_file": file.id,
        "validation_file": None,
        "suffix": None,
        "seed": 3,
        "status": "queued",
        "error": None,
        "model_key": "Rft12345",
        "method": method,
        "metadata": None,
        "integrations": [],
        "result_files": [],
        "model_deleted": False,
        "last_step": 0,
        "attempts": 0,
        "parent_job_id": None,
        "parent_step": None,
    }
    svc.store.add_job(row)
    return row["id"]


def cli(*argv) -> tuple[int, str]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main([str(a) for a in argv])
    return code, out.getvalue()


def pull(world, *extra):
    return cli(
        "openai",
        "pull",
        "--base-url",
        world["a"].base_url,
        "--api-key",
        world["a"].key_a,
        "--out",
        world["root"] / "pulled",
        "--base-model",
        f"tiny={world['a'].settings.base_models['tiny']}",
        "--set",
        SET,
        *extra,
    )


def test_pull_maps_what_it_can_and_says_why_not_for_the_rest(world):
    code, out = pull(world)
    assert code == 0, out
    folder, jobs = world["root"] / "pulled", world["jobs"]
    manifest = json.loads((folder / "manifest.json").read_text())
    entries = manifest["jobs"]
    assert list(entries) == list(jobs.values())  # oldest first, all of them
    status = {name: entries[jid]["status"] for name, jid in jobs.items()}
    assert status == {
        "sft": "mapped",
        "dpo": "mapped",
        "other_base": "unmapped",
        "expired": "unmapped",
        "cancelled": "skipped",
        "rft_live": "mapped",
        "rft": "unmapped",
    }
    reason = {name: entries[jid].get("reason") for name, jid in jobs.items()}
    assert reason["other_base"] == (
        "base model tiny2 has no open model to stand in for it (add --base-model "
        "tiny2=PATH, or a default --base-model PATH)"
    )
    assert (
        reason["expired"].startswith(
            f"training file {entries[jobs['expired']]['job']['training_file']} could not be downloaded: file "
        )
        and "404 file_not_found" in reason["expired"]
    )
    assert reason["rft"] == (
        "method.reinforcement.grader.graders.judge.model: 'o3-mini-2025-01-31' is not a local "
        "model; map it to a local judge with --judge-model (a model folder or .gguf file)"
    )
    assert reason["cancelled"].startswith("the job cancelled on the source")
    summary = (folder / "SUMMARY.md").read_text()
    assert "3 of 7 jobs mapped" in summary and reason["other_base"] in summary
    rft = yaml.safe_load((folder / entries[jobs["rft_live"]]["config"]).read_text())
    assert rft["method"] == "grpo" and rft["grpo"]["rewards"][0]["grader"] == COLOR_CHECK
    assert rft["grpo"]["group_size"] == 2 and rft["train"]["seed"] == 5  # 8 x compute_multiplier 0.25

    # The files are the uploaded bytes; the SFT config is what A's worker trained.
    sft = entries[jobs["sft"]]
    train = manifest["files"][sft["job"]["training_file"]]
    assert (folder / train["path"]).read_bytes() == b"".join(
        (json.dumps(r) + "\n").encode() for r in world["sft_rows"]
    )
    ours = yaml.safe_load((folder / sft["config"]).read_text())
    theirs = yaml.safe_load((world["a"].settings.run_dir(jobs["sft"]) / "config.yaml").read_text())
    assert ours["train"] == theirs["train"] and ours["method"] == theirs["method"] == "sft"
    assert sft["tunesmith"]["lr"] == pytest.approx(4e-4) and ours["train"]["seed"] == 7
    dpo = yaml.safe_load((folder / entries[jobs["dpo"]]["config"]).read_text())
    assert dpo["preference"]["beta"] == 0.25 and dpo["train"]["lr"] == pytest.approx(1e-4)

    # A second pull downloads nothing and gives the same manifest.
    a = world["a"]
    before = len(a.requests)
    code, _ = pull(world)
    assert code == 0
    fetched = [p for m, p in a.requests[before:] if p.startswith("/v1/files/")]
    assert fetched == [
        f"/v1/files/{entries[jobs['expired']]['job']['training_file']}"
    ]  # only the missing one
    again = json.loads((folder / "manifest.json").read_text())
    assert {j: e["status"] for j, e in again["jobs"].items()} == {j: e["status"] for j, e in entries.items()}


def test_the_pulled_config_trains_the_same_model_as_the_source(world):
    from safetensors.torch import load_file

    from tunesmith.run import train

    folder = world["root"] / "pulled"
    manifest = json.loads((folder / "manifest.json").read_text())
    result = train(str(folder / manifest["jobs"][world["jobs"]["sft"]]["config"]))
    assert result.steps == 3  # 12 rows / batch 4, 1 epoch
    ours = load_file(folder / "runs" / world["jobs"]["sft"] / "final" / "adapter_model.safetensors")
    theirs = load_file(
        world["a"].settings.run_dir(world["jobs"]["sft"]) / "final" / "adapter_model.safetensors"
    )
    assert ours.keys() == theirs.keys()
    for name in ours:  # same data, seed, hyperparameters and base: the same weights
        assert (ours[name] - theirs[name]).abs().max().item() < 1e-5, name


def test_push_recreates_the_jobs_on_another_server_once(world):
    b, folder = world["b"], world["root"] / "pulled"
    args = (
        "openai",
        "push",
        "--base-url",
        b.base_url,
        "--api-key",
        b.key_a,
        "--from",
        folder,
        "--model",
        "tiny",
    )
    code, out = cli(*args)
    manifest = json.loads((folder / "manifest.json").read_text())
    pushed = manifest["push"][b.base_url]
    jobs = world["jobs"]
    assert jobs["cancelled"] not in pushed
    assert pushed[jobs["expired"]]["error"].startswith(f"its training file {world['sft'].training_file}"[:18])
    assert "was not downloaded" in pushed[jobs["expired"]]["error"]
    cb = b.client()
    by_source = {j.metadata["migrated_from"]: j for j in cb.fine_tuning.jobs.list(limit=100)}
    for name in ("sft", "dpo", "other_base", "rft_live"):
        assert pushed[jobs[name]]["job"] == by_source[jobs[name]].id
    live = by_source[jobs["rft_live"]].method.reinforcement
    assert live.grader.model_dump(exclude_none=True) == COLOR_CHECK
    assert live.hyperparameters.compute_multiplier == 0.25
    new, old = by_source[jobs["sft"]], world["sft"]
    assert new.method.model_dump() == old.method.model_dump()  # type and resolved hyperparameters
    assert (new.seed, new.model, new.metadata) == (7, "tiny", {"team": "cx", "migrated_from": old.id})
    assert new.user_provided_suffix == "support" and new.validation_file is not None
    assert (
        cb.files.content(new.training_file).read()
        == world["a"].client().files.content(old.training_file).read()
    )
    assert by_source[jobs["dpo"]].method.dpo.hyperparameters.beta == 0.25
    # The RFT job goes as it is; B has no judge for its label_model grader, and says so.
    rft = pushed[jobs["rft"]]
    assert rft["error"].startswith("the target refused the job: 400 invalid_request_error: "), rft
    assert "o3-mini-2025-01-31" in rft["error"], rft
    assert code == 1 and f"{jobs['expired']}: not pushed: its training file" in out, out

    uploads = sum(1 for m, p in b.requests if (m, p) == ("POST", "/v1/files"))
    code2, out2 = cli(*args)
    assert code2 == code, out2
    assert len(list(cb.fine_tuning.jobs.list(limit=100))) == len(by_source)  # nothing duplicated
    assert sum(1 for m, p in b.requests if (m, p) == ("POST", "/v1/files")) == uploads


def heldout(world) -> Path:
    path = world["root"] / "heldout.jsonl"
    if not path.exists():
        factory.write_jsonl(path, factory.color_chats(6, seed=3))
    return path


def record(world, out: Path, *extra, base_url=None):
    return cli(
        "openai",
        "record",
        "--base-url",
        base_url or world["a"].base_url,
        "--api-key",
        world["a"].key_a,
        "--model",
        world["sft"].fine_tuned_model,
        "--data",
        heldout(world),
        "--out",
        out,
        "--max-tokens",
        8,
        *extra,
    )


def chat_calls(svc) -> int:
    return sum(1 for m, p in svc.requests if p == "/v1/chat/completions")


def test_record_is_resumable_and_keeps_each_request(world):
    out = world["root"] / "recorded.jsonl"
    calls = chat_calls(world["a"])
    assert record(world, out, "--limit", 3)[0] == 0
    with open(out, "a") as f:  # a kill in the middle of writing row 4
        f.write('{"index": 3, "row_sha256": "ab')
    code, text = record(world, out)
    assert code == 0 and "recorded 3 answers (3 were already recorded) of 6 rows" in text
    assert chat_calls(world["a"]) - calls == 6
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(6))
    first = rows[0]
    assert first["request"] == {
        "model": world["sft"].fine_tuned_model,
        "messages": first["request"]["messages"],
        "temperature": 0.0,
        "max_tokens": 8,
        "seed": 0,
    }
    assert first["request"]["messages"][-1]["role"] == "user" and first["reference"].startswith("the ")
    assert first["response"]["model"] == world["sft"].fine_tuned_model

    code, text = record(world, out, "--temperature", 0.7)
    assert code == 2 and text.strip().splitlines() == [
        f"error: {out} was recorded with temperature=0.0; this run asks for temperature=0.7: use the same "
        "options, or another --out"
    ]
    code, text = cli(
        "openai",
        "record",
        "--base-url",
        world["a"].base_url,
        "--api-key",
        world["a"].key_a,
        "--model",
        "ft:tiny:personal::Zzzzzzzz",
        "--data",
        heldout(world),
        "--out",
        world["root"] / "none.jsonl",
    )
    assert code == 2 and len(text.strip().splitlines()) == 1
    assert text.startswith(f"error: {heldout(world)}:1: 404 model_not_found: The model `ft:tiny"), text


def test_record_retries_rate_limits_and_server_errors(world):
    faults = FaultyFront(world["a"], [429, 500, 429])
    try:
        out = world["root"] / "retried.jsonl"
        code, text = record(world, out, "--limit", 2, base_url=faults.base_url)
        assert code == 0, text
        assert faults.sent == [429, 500, 429, 200, 200]
        assert len(out.read_text().splitlines()) == 2
    finally:
        faults.close()


def test_eval_against_the_recording(world, tmp_path):
    out = world["root"] / "recorded.jsonl"
    if not out.exists():
        record(world, out)
    run = world["root"] / "pulled" / "runs" / world["jobs"]["sft"]
    other = factory.write_jsonl(tmp_path / "other.jsonl", factory.color_chats(6, seed=4))
    code, text = cli("eval", run, "--data", other, "--against", out)
    assert code == 2 and re.fullmatch(
        rf"error: {out}: the answer recorded as row (\d) \({heldout(world)}:(\d)\) was asked for a different "
        rf"row than {other}:(\d) \(recorded from another file, or the file changed since\)",
        text.strip().splitlines()[-1],
    )
    grader = tmp_path / "grader.json"
    grader.write_text(
        json.dumps(
            {
                "type": "text_similarity",
                "name": "close",
                "evaluation_metric": "fuzzy_match",
                "input": "{{sample.output_text}}",
                "reference": "{{item.reference}}",
            }
        )
    )
    code, text = cli(
        "eval",
        run,
        "--data",
        heldout(world),
        "--against",
        out,
        "--max-new-tokens",
        8,
        "--resamples",
        200,
        "--out",
        tmp_path / "eval",
        "--threads",
        1,
        "--grader",
        grader,
    )
    assert code == 0, text
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert [(m["name"], m["kind"]) for m in report["models"]] == [
        ("final", "adapter"),
        ("recorded", "recorded"),
    ]
    (cmp,) = report["comparisons"]
    assert cmp["baseline"] == "recorded" and {"exact_match", "rouge_l", "token_f1"} <= set(cmp["metrics"])
    rouge = cmp["metrics"]["rouge_l"]
    assert rouge["win"] + rouge["tie"] + rouge["loss"] == 6 and "low" in rouge and "high" in rouge
    # The local retrain has A's weights (test above), so greedy decoding picks the same tokens
    # on every row. The texts are not byte-equal: the random tiny model emits byte tokens, and a
    # reply cut at max_tokens inside a UTF-8 sequence ends in U+FFFD in eval's decoding, while
    # the server holds the incomplete bytes back. ROUGE-L reads letter/digit tokens: all equal.
    agree = report["metrics"]["final"]["agree:rouge_l"]
    assert agree["n"] == 6 and agree["value"] == 1.0
    assert report["settings"]["against"]["request"]["max_tokens"] == 8
    # The grader scores both models against the reference, and the local one against the recording.
    assert {"grader:close"} <= set(cmp["metrics"]) and report["metrics"]["final"]["agree:grader:close"][
        "n"
    ] == 6
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "recorded" in html and "vs recorded answer" in html


class FaultyFront:
    """Server A's app behind a front that answers the first chat completions with the given
    statuses (OpenAI's error envelope, ``retry-after-ms: 10``) before letting requests through."""

    def __init__(self, svc, statuses: list[int]):
        import uvicorn

        from tunesmith.jobs.app import create_app

        inner, self.pending, self.sent = create_app(svc.settings, svc.store), list(statuses), []

        async def front(scope, receive, send):
            if scope["type"] == "http" and scope["path"] == "/v1/chat/completions":
                if self.pending:
                    status = self.pending.pop(0)
                    self.sent.append(status)
                    body = json.dumps(
                        {"error": {"message": "slow down", "type": "rate_limit", "param": None, "code": None}}
                    ).encode()
                    await send(
                        {
                            "type": "http.response.start",
                            "status": status,
                            "headers": [(b"content-type", b"application/json"), (b"retry-after-ms", b"10")],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
                self.sent.append(200)
            await inner(scope, receive, send)

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        self.server = uvicorn.Server(uvicorn.Config(front, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started and time.time() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
