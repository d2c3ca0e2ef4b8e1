"""In-process checks of the jobs app's safety nets: the error ``type`` of every status, the
last-resort handler, a client that disconnects mid-upload, the ``.incoming`` sweep, one model
object for a shared checkpoint, the hyperparameter bounds, and public (path-free) job messages."""

from __future__ import annotations

import logging
import os
import time

import anyio
import pytest

pytest.importorskip("fastapi")

from starlette.testclient import TestClient  # noqa: E402

from tunesmith.jobs import ids  # noqa: E402
from tunesmith.jobs.app import create_app  # noqa: E402
from tunesmith.jobs.objects import job_model_id  # noqa: E402
from tunesmith.jobs.redact import SERVER_PATH, public_text  # noqa: E402
from tunesmith.jobs.settings import Settings  # noqa: E402
from tunesmith.jobs.spec import normalise_create  # noqa: E402
from tunesmith.jobs.store import Store  # noqa: E402
from tunesmith.serve.protocol import APIError, error_type  # noqa: E402


@pytest.fixture
def service(tmp_path):
    """(app, store, settings, alpha's key, beta's key) over a fresh SQLite store."""
    settings = Settings(db=f"sqlite:///{tmp_path / 'jobs.db'}", data_dir=tmp_path / "data")
    store = Store(settings.db)
    app = create_app(settings, store)
    key_a, _ = store.create_key("alpha")
    key_b, _ = store.create_key("beta")
    yield app, store, settings, key_a, key_b
    store.dispose()


def _auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


# -- the envelope -------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", range(400, 500))
def test_every_4xx_is_a_client_error_type(status):
    assert error_type(status) != "server_error"
    assert APIError(status, "x").body()["error"]["type"] in (
        "invalid_request_error",
        "permission_error",
        "rate_limit_error",
    )


def test_an_unhandled_exception_is_a_logged_json_500(service, monkeypatch, caplog):
    app, store, _, key_a, _ = service

    def broken(*_a, **_k):
        raise RuntimeError("disk on fire at /srv/secret/jobs.db")

    monkeypatch.setattr(store, "list_files", broken)
    with caplog.at_level(logging.ERROR, logger="tunesmith.jobs"):
        r = TestClient(app).get("/v1/files", headers=_auth(key_a))  # would raise if it escaped
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert err["type"] == "server_error" and "/srv/secret" not in err["message"]
    assert any("disk on fire" in str(rec.exc_info[1]) for rec in caplog.records if rec.exc_info)


# -- uploads ------------------------------------------------------------------------------------------
def _post_scope(key: str, path: str, content_type: bytes) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
        "headers": [(b"authorization", f"Bearer {key}".encode()), (b"content-type", content_type)],
    }


def _disconnect_after(app, scope: dict, first_chunk: bytes) -> list[dict]:
    """Run one request whose client sends ``first_chunk`` and hangs up; the messages sent back."""
    messages = [{"type": "http.request", "body": first_chunk, "more_body": True}, {"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    anyio.run(app, scope, receive, send)  # raises if the disconnect escaped the app
    return sent


def test_a_client_disconnect_mid_upload_is_quiet_and_leaves_nothing(service, caplog):
    app, _, settings, key_a, _ = service
    head = (
        b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n'
    )
    with caplog.at_level(logging.WARNING):
        sent = _disconnect_after(
            app, _post_scope(key_a, "/v1/files", b"multipart/form-data; boundary=B"), head + b"{}\n" * 1000
        )
        _disconnect_after(
            app, _post_scope(key_a, "/v1/fine_tuning/jobs", b"application/json"), b'{"model": "ti'
        )
    assert sent[0]["status"] == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert list((settings.files_dir / ".incoming").iterdir()) == []
    assert [p for p in settings.files_dir.iterdir() if p.is_file()] == []


def test_incoming_uploads_left_by_a_dead_server_are_swept_at_start(service):
    app, _, settings, _, _ = service
    incoming = settings.files_dir / ".incoming"
    stale, live = incoming / "file-stale", incoming / "file-live"
    stale.write_bytes(b"partial")
    live.write_bytes(b"another server is still writing this")
    hours_ago = time.time() - 2 * 3600
    os.utime(stale, (hours_ago, hours_ago))
    with TestClient(app):  # runs the lifespan
        assert not stale.exists() and live.exists()


# -- one model object per model ----------------------------------------------------------------------
def test_a_shared_checkpoint_has_one_created_time_in_get_and_list(service):
    app, store, settings, key_a, key_b = service
    alpha, beta = store.project_for_key(key_a)["id"], store.project_for_key(key_b)["id"]
    job = store.add_job(
        {
            "id": ids.job_id(),
            "project_id": alpha,
            "created_at": 1000,
            "model": "tiny",
            "training_file": "file-x",
            "validation_file": None,
            "suffix": None,
            "seed": 1,
            "status": "succeeded",
            "finished_at": 3000,
            "error": None,
            "model_key": ids.model_key(),
            "method": {
                "type": "supervised",
                "supervised": {
                    "hyperparameters": {"n_epochs": 1, "batch_size": 1, "learning_rate_multiplier": 1.0}
                },
            },
            "metadata": None,
            "integrations": [],
            "result_files": [],
            "model_deleted": False,
            "last_step": 2,
            "attempts": 1,
        }
    )
    ckpt = job_model_id(job, settings.owner, 2)
    store.add_checkpoint(
        {
            "id": ids.checkpoint_id(),
            "job_id": job["id"],
            "created_at": 2000,
            "fine_tuned_model_checkpoint": ckpt,
            "step_number": 2,
            "metrics": {},
        }
    )
    store.add_permissions(ckpt, job["id"], 2, alpha, [beta])
    http = TestClient(app)
    got = http.get(f"/v1/models/{ckpt}", headers=_auth(key_b)).json()
    [listed] = [m for m in http.get("/v1/models", headers=_auth(key_b)).json()["data"] if m["id"] == ckpt]
    assert got == listed and got["created"] == 2000 and got["owned_by"] == alpha


# -- create-job numbers -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key,value",
    [
        ("learning_rate_multiplier", 1e308),
        ("learning_rate_multiplier", 100.5),
        ("learning_rate_multiplier", 5e-324),
        pytest.param("learning_rate_multiplier", 10**400, id="learning_rate_multiplier-10**400"),
        pytest.param("beta", 10**400, id="beta-10**400"),
        ("beta", 0.0),
        ("n_epochs", 51),
        ("batch_size", 2**70),
    ],
)
def test_every_hyperparameter_is_finite_and_bounded(key, value):
    with pytest.raises(APIError) as info:
        normalise_create(
            {
                "model": "tiny",
                "training_file": "file-x",
                "method": {"type": "dpo", "dpo": {"hyperparameters": {key: value}}},
            }
        )
    assert info.value.status == 400 and info.value.param == f"method.dpo.hyperparameters.{key}"
    assert len(info.value.message) < 300


@pytest.mark.parametrize("value", [1e-9, 0.05, 1, 2.5, 100])
def test_usable_learning_rate_multipliers_pass(value):
    hyper = normalise_create(
        {"model": "tiny", "training_file": "file-x", "hyperparameters": {"learning_rate_multiplier": value}}
    )["method"]
    assert hyper["supervised"]["hyperparameters"]["learning_rate_multiplier"] == value


# -- public job messages -------------------------------------------------------------------------------
def test_public_text_names_known_paths_and_hides_the_rest(tmp_path):
    staged = tmp_path / "runs" / "ftjob-1" / "data" / "train.jsonl"
    text = (
        f"error: no trainable example in {staged}: see {tmp_path}/runs/ftjob-1/log.txt; "
        'File "/usr/lib/python3.11/json/decoder.py", line 3; https://example.com/a/b stays; and/or stays'
    )
    out = public_text(text, {staged: "the training file file-abc"})
    assert "no trainable example in the training file file-abc:" in out
    assert str(tmp_path) not in out and "/usr/lib" not in out and out.count(SERVER_PATH) == 2
    assert "https://example.com/a/b stays; and/or stays" in out


def test_the_worker_stores_failures_without_server_paths(service):
    from tunesmith.jobs.worker import Worker

    _, store, settings, key_a, _ = service
    alpha = store.project_for_key(key_a)["id"]
    job = store.add_job(
        {
            "id": ids.job_id(),
            "project_id": alpha,
            "created_at": 1000,
            "model": "tiny",
            "training_file": "file-abc",
            "validation_file": None,
            "suffix": None,
            "seed": 1,
            "status": "running",
            "error": None,
            "model_key": ids.model_key(),
            "method": {"type": "supervised", "supervised": {"hyperparameters": {}}},
            "metadata": None,
            "integrations": [],
            "result_files": [],
            "model_deleted": False,
            "last_step": 0,
            "attempts": 1,
        }
    )
    run = settings.run_dir(job["id"])
    Worker(settings, store)._fail(
        job,
        "server_error",
        "The job failed due to an internal error: error: no "
        f"trainable example in {run}/data/train.jsonl (see {run}/worker-attempt-1.log)",
        None,
    )
    failed = store.get_job(None, job["id"])
    events = store.list_events(job["id"], limit=10)[0]
    for text in [failed["error"]["message"]] + [e["message"] for e in events]:
        assert str(settings.data_dir) not in text and "/data/" not in text, text
    assert "in the training file file-abc" in failed["error"]["message"]


# -- PostgreSQL cannot hold NUL in text: refused at the door, on both stores ---------------------------
def test_nul_in_ids_queries_and_bodies_is_a_400_on_every_store(store, tmp_path):
    settings = Settings(db="unused", data_dir=tmp_path / "data")
    key, _ = store.create_key("alpha", admin=True)
    http = TestClient(create_app(settings, store), raise_server_exceptions=False)
    auth = _auth(key)
    ckpt = "ft:tiny:personal::AAAAAAAA:ckpt-step-1"
    for method, url, body in [
        ("GET", "/v1/files/file-a%00b", None),
        ("DELETE", "/v1/files/a%00", None),
        ("GET", "/v1/files?after=a%00b", None),
        ("GET", "/v1/files?purpose=fine%00", None),
        ("GET", "/v1/fine_tuning/jobs/ftjob-%00/events", None),
        ("POST", "/v1/fine_tuning/jobs/a%00/cancel", None),
        ("DELETE", f"/v1/fine_tuning/checkpoints/{ckpt}/permissions/cp_%00", None),
        ("GET", f"/v1/fine_tuning/checkpoints/{ckpt}/permissions?project_id=p%00", None),
        ("POST", "/v1/fine_tuning/jobs", {"model": "tiny", "training_file": "file-\x00"}),
        ("POST", "/v1/fine_tuning/jobs", {"model": "tiny", "training_file": "f", "metadata": {"k": "\x00"}}),
        ("POST", f"/v1/fine_tuning/checkpoints/{ckpt}/permissions", {"project_ids": ["proj_\x00"]}),
    ]:
        r = http.request(method, url, headers=auth, json=body)
        assert r.status_code == 400 and "NUL" in r.json()["error"]["message"], (
            url,
            r.status_code,
            r.text[:200],
        )
