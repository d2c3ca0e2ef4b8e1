"""The jobs API through the official ``openai`` SDK over real HTTP (no training in this file):
files, pagination, validation errors, auth, project isolation, uploads, idempotent controls."""

from __future__ import annotations

import httpx2 as httpx
import openai
import pytest
from jobs_harness import chat_rows, jsonl_bytes, service_fixtures

pytest.importorskip("fastapi")

MAX_UPLOAD = 64 * 1024


# No workers here; stale_after 1.5 s makes the server's background sweep (stale jobs, expired
# files) run every 0.5 s.
svc, client = service_fixtures("svc", max_upload_bytes=MAX_UPLOAD, stale_after=1.5)


@pytest.fixture(scope="module")
def train_file(client):
    return client.files.create(
        file=("train.jsonl", jsonl_bytes(chat_rows(12)), "application/jsonl"), purpose="fine-tune"
    )


def _job(client, train_file, **kw):
    return client.fine_tuning.jobs.create(model="tiny", training_file=train_file.id, **kw)


def test_upload_round_trip(client):
    data = jsonl_bytes(chat_rows(10, seed=3))
    f = client.files.create(file=("t.jsonl", data, "application/jsonl"), purpose="fine-tune")
    assert (f.object, f.bytes, f.filename, f.purpose, f.status) == (
        "file",
        len(data),
        "t.jsonl",
        "fine-tune",
        "processed",
    )
    assert f.id.startswith("file-") and len(f.id) == 27
    assert client.files.content(f.id).read() == data
    assert client.files.retrieve(f.id).bytes == len(data)
    assert client.files.delete(f.id).deleted is True
    with pytest.raises(openai.NotFoundError) as info:
        client.files.retrieve(f.id)
    assert info.value.code == "file_not_found"
    assert str(info.value).startswith("Error code: 404 - ")
    assert info.value.body["message"] == f"No such File object: {f.id}"


def test_file_listing_orders_and_pages(client):
    made = [
        client.files.create(file=(f"p{i}.jsonl", b"{}\n", "application/jsonl"), purpose="batch").id
        for i in range(5)
    ]
    desc = [f.id for f in client.files.list(purpose="batch", limit=2)]
    asc = [f.id for f in client.files.list(purpose="batch", limit=2, order="asc")]
    assert desc == made[::-1] and asc == made
    page = client.files.list(purpose="batch", limit=2)
    assert page.has_more is True and page.first_id == made[4] and page.last_id == made[3]


def test_job_pagination_walks_every_job_newest_first(svc, client, train_file):
    other = svc.client(svc.key_b)
    before = len(svc.requests)
    made = [_job(client, train_file, metadata={"batch": "p"}).id for _ in range(25)]
    listed = [j.id for j in client.fine_tuning.jobs.list(limit=10, metadata={"batch": "p"})]
    assert listed == made[::-1]
    pages = [p for m, p in svc.requests[before:] if m == "GET" and p == "/v1/fine_tuning/jobs"]
    assert len(pages) == 3
    first = client.fine_tuning.jobs.list(limit=10, metadata={"batch": "p"})
    assert first.has_more is True
    last = client.fine_tuning.jobs.list(limit=10, after=made[5], metadata={"batch": "p"})
    assert last.has_more is False and [j.id for j in last.data] == made[4::-1]
    assert not any(j.id in made for j in other.fine_tuning.jobs.list())
    for jid in made:  # leave nothing for later tests' workers
        client.fine_tuning.jobs.cancel(jid)


def test_events_and_checkpoints_page_newest_first(svc, client, train_file):
    job = _job(client, train_file)
    client.fine_tuning.jobs.cancel(job.id)
    for i in range(25):
        svc.store.add_event(job.id, f"note {i}")
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=7))
    assert [e.message for e in events[:3]] == ["note 24", "note 23", "note 22"]
    assert events[-1].message == f"Created fine-tuning job: {job.id}" and len({e.id for e in events}) == 28
    assert client.fine_tuning.jobs.list_events(job.id).has_more is True  # default limit 20 < 28
    from tunesmith.jobs import ids

    for step in range(1, 13):
        svc.store.add_checkpoint(
            {
                "id": ids.checkpoint_id(),
                "job_id": job.id,
                "created_at": 0,
                "fine_tuned_model_checkpoint": f"m:{step}",
                "step_number": step,
                "metrics": {"step": step},
            }
        )
    page = client.fine_tuning.jobs.checkpoints.list(job.id)
    assert len(page.data) == 10 and page.has_more and page.data[0].step_number == 12
    assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id, limit=5)] == list(
        range(12, 0, -1)
    )


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"suffix": "x" * 65}, "suffix"),
        ({"suffix": "../../x"}, "suffix"),
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"n_epochs": 51}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"batch_size": 257}}, "hyperparameters.batch_size"),
        ({"hyperparameters": {"learning_rate_multiplier": 0}}, "hyperparameters.learning_rate_multiplier"),
        (
            {"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 2.5}}}},
            "method.dpo.hyperparameters.beta",
        ),
        ({"seed": -1}, "seed"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"method": {"type": "nope"}}, "method.type"),
        ({"model": "gpt-9"}, "model"),
        ({"model": "ft:../../etc"}, "model"),
        ({"training_file": "file-doesnotexist000000000"}, "training_file"),
    ],
)
def test_create_rejects_bad_values_once_with_param(svc, client, train_file, kwargs, param):
    body = {"model": "tiny", "training_file": train_file.id, **kwargs}
    before = len(svc.requests)
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(**body)
    assert info.value.param == param and info.value.type == "invalid_request_error"
    assert info.value.response.headers["x-should-retry"] == "false"
    assert len(svc.requests) - before == 1  # never retried


def test_create_rejects_files_of_another_purpose(client):
    f = client.files.create(file=("b.jsonl", b"{}\n", "application/jsonl"), purpose="batch")
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(model="tiny", training_file=f.id)
    assert info.value.param == "training_file" and "fine-tune" in info.value.message


def test_hyperparameters_echo_auto_and_given_values(client, train_file):
    job = _job(
        client,
        train_file,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        suffix="v1",
    )
    assert job.status == "validating_files" and job.fine_tuned_model is None and job.finished_at is None
    assert job.method.supervised.hyperparameters.n_epochs == 2
    assert job.hyperparameters.batch_size == "auto" and job.hyperparameters.learning_rate_multiplier == "auto"
    assert job.id.startswith("ftjob-") and len(job.id) == 30 and isinstance(job.seed, int)
    legacy = _job(client, train_file, hyperparameters={"batch_size": 4})
    assert legacy.method.type == "supervised" and legacy.method.supervised.hyperparameters.batch_size == 4
    events = [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
    assert events == [f"Validating training file: {train_file.id}", f"Created fine-tuning job: {job.id}"]
    for j in (job, legacy):
        client.fine_tuning.jobs.cancel(j.id)


def test_controls_are_idempotent_and_refuse_bad_transitions(svc, client, train_file):
    job = _job(client, train_file)
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    # paused before its files were validated: resuming returns it to validation
    assert client.fine_tuning.jobs.resume(job.id).status == "validating_files"
    assert client.fine_tuning.jobs.resume(job.id).status == "validating_files"
    first = client.fine_tuning.jobs.cancel(job.id)
    before = len(svc.requests)
    again = client.fine_tuning.jobs.cancel(job.id)
    assert first.status == again.status == "cancelled" and again.finished_at == first.finished_at
    assert len(svc.requests) - before == 1
    for call in (client.fine_tuning.jobs.pause, client.fine_tuning.jobs.resume):
        with pytest.raises(openai.BadRequestError) as info:
            call(job.id)
        assert info.value.response.headers["x-should-retry"] == "false"
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
    assert messages[:3] == ["Fine-tuning job cancelled", "Fine-tuning job resumed", "Fine-tuning job paused"]


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer sk-ts-wrong", "Basic abc", "sk-ts-nobearer"])
def test_missing_or_invalid_keys_are_401(svc, header):
    headers = {} if header is None else {"Authorization": header}
    r = httpx.get(f"{svc.base_url}/files", headers=headers)
    assert r.status_code == 401
    assert (
        r.json()["error"]["code"] == "invalid_api_key"
        and r.json()["error"]["type"] == "invalid_request_error"
    )
    with pytest.raises(openai.AuthenticationError):
        svc.client("sk-ts-wrong").models.list()


def test_revoked_key_is_refused(svc):
    key, _ = svc.store.create_key("gamma")
    assert svc.client(key).models.list().data
    svc.store.revoke_key(key)
    with pytest.raises(openai.AuthenticationError):
        svc.client(key).models.list()


def test_other_projects_objects_answer_like_missing_ones(svc, client, train_file):
    job = _job(client, train_file)
    client.fine_tuning.jobs.cancel(job.id)
    b = httpx.Client(base_url=svc.base_url, headers={"Authorization": f"Bearer {svc.key_b}"})
    fake_file, fake_job = "file-" + "Z" * 22, "ftjob-" + "Z" * 24

    def same(template, real_id, fake_id, method="GET"):
        real = b.request(method, template.format(real_id))
        fake = b.request(method, template.format(fake_id))
        assert real.status_code == fake.status_code == 404
        expected = {
            k: (v.replace(fake_id, real_id) if isinstance(v, str) else v)
            for k, v in fake.json()["error"].items()
        }
        assert real.json()["error"] == expected

    same("/files/{}", train_file.id, fake_file)
    same("/files/{}/content", train_file.id, fake_file)
    same("/files/{}", train_file.id, fake_file, "DELETE")
    for path in ("/fine_tuning/jobs/{}", "/fine_tuning/jobs/{}/events", "/fine_tuning/jobs/{}/checkpoints"):
        same(path, job.id, fake_job)
    same("/fine_tuning/jobs/{}/cancel", job.id, fake_job, "POST")
    assert train_file.id not in [f["id"] for f in b.get("/files").json()["data"]]
    with pytest.raises(openai.BadRequestError):  # B cannot train on A's file either
        svc.client(svc.key_b).fine_tuning.jobs.create(model="tiny", training_file=train_file.id)
    assert client.files.retrieve(train_file.id).id == train_file.id  # still A's


@pytest.mark.parametrize(
    "name", ["../../../../etc/pwn.txt", "..\\..\\x", "/etc/passwd", "%2e%2e%2fx", "a\x00b.jsonl", "n" * 4096]
)
def test_file_names_never_become_paths(svc, client, name):
    f = client.files.create(file=(name, b'{"a": 1}\n', "application/jsonl"), purpose="fine-tune")
    root = svc.settings.files_dir
    stored = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    assert f.id in stored and all(p.startswith("file-") for p in stored)
    assert "/" not in f.filename and "\\" not in f.filename and "\x00" not in f.filename
    assert len(f.filename) <= 255
    assert not (svc.root / "etc").exists() and not (root.parent.parent / "etc" / "pwn.txt").exists()


def test_oversized_uploads_are_refused_while_streaming(svc, client):
    stored = set(svc.settings.files_dir.iterdir())
    with pytest.raises(openai.APIStatusError) as info:
        client.files.create(
            file=("big.jsonl", b"x" * (MAX_UPLOAD * 4), "application/jsonl"), purpose="fine-tune"
        )
    assert info.value.status_code == 413 and info.value.code == "file_too_large"

    # Chunked, no Content-Length: the limit is enforced on the stream itself.
    sent = {"bytes": 0}

    def body():
        yield b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
        for _ in range(64):
            sent["bytes"] += 16384
            yield b"y" * 16384
        yield b"\r\n--B--\r\n"

    r = httpx.post(
        f"{svc.base_url}/files",
        content=body(),
        headers={"Authorization": f"Bearer {svc.key_a}", "Content-Type": "multipart/form-data; boundary=B"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
    assert set(svc.settings.files_dir.iterdir()) == stored  # nothing kept
    assert not any((svc.settings.files_dir / ".incoming").iterdir())


def test_bad_purpose_and_non_multipart_uploads(svc, client):
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("t.jsonl", b"{}\n", "application/jsonl"), purpose="fine-tune-results")
    assert info.value.param == "purpose"
    r = httpx.post(
        f"{svc.base_url}/files",
        json={"purpose": "fine-tune"},
        headers={"Authorization": f"Bearer {svc.key_a}"},
    )
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_models_list_bases_and_unknown_models_are_404(client):
    assert "tiny" in [m.id for m in client.models.list()]
    assert client.models.retrieve("tiny").owned_by == "system"
    for name in ("nope", "ft:tiny:personal::AAAAAAAA", "ft:../../etc"):
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve(name)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(
            model="ft:tiny:personal::AAAAAAAA", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.code == "model_not_found"


def test_unknown_routes_use_the_error_envelope(svc):
    r = httpx.get(f"{svc.base_url}/nothing", headers={"Authorization": f"Bearer {svc.key_a}"})
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_dashboard_is_served(svc):
    base = svc.base_url[: -len("/v1")]
    page = httpx.get(base + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'src="/static/dashboard.js"' in page.text
    js = httpx.get(base + "/static/dashboard.js")
    assert js.status_code == 200 and "fine_tuning/jobs" in js.text
    assert httpx.get(base + "/static/..%2f..%2fapp.py").status_code == 404


@pytest.mark.parametrize(
    "expires_after",
    [
        {"anchor": "created_at", "seconds": 3599},
        {"anchor": "created_at", "seconds": 2592001},
        {"anchor": "last_active_at", "seconds": 3600},
    ],
)
def test_expires_after_out_of_range_is_refused(client, expires_after):
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(
            file=("e.jsonl", b"{}\n", "application/jsonl"), purpose="fine-tune", expires_after=expires_after
        )
    assert info.value.param == "expires_after" and info.value.response.headers["x-should-retry"] == "false"


def test_an_expired_file_is_gone_then_swept(svc, client):
    import time

    rows = jsonl_bytes(chat_rows(10, seed=4))
    f = client.files.create(
        file=("e.jsonl", rows, "application/jsonl"),
        purpose="fine-tune",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert f.expires_at == f.created_at + 3600
    assert (
        client.files.retrieve(f.id).expires_at == f.expires_at and client.files.content(f.id).read() == rows
    )
    blob = svc.settings.files_dir / f.id
    time.sleep(1.0)  # two sweeps at the real time: the file is not due yet
    assert blob.is_file()
    svc.store.clock = lambda: time.time() + 3600  # an hour later
    try:
        missing = "file-" + "Q" * 22
        for call in (client.files.retrieve, client.files.content, client.files.delete):
            with pytest.raises(openai.NotFoundError) as info:
                call(f.id)
            with pytest.raises(openai.NotFoundError) as fake:
                call(missing)
            assert info.value.body == {
                **fake.value.body,
                "message": fake.value.body["message"].replace(missing, f.id),
            }
        assert f.id not in [x.id for x in client.files.list()]
        with pytest.raises(openai.BadRequestError) as info:  # no new job may use it
            client.fine_tuning.jobs.create(model="tiny", training_file=f.id)
        assert info.value.param == "training_file"
        deadline = time.time() + 10
        while blob.exists() and time.time() < deadline:  # the server's periodic sweep
            time.sleep(0.05)
        assert not blob.exists() and svc.store.sweep_expired_files() == []
    finally:
        svc.store.clock = time.time
    with pytest.raises(openai.NotFoundError):  # the row went with the blob
        client.files.retrieve(f.id)
