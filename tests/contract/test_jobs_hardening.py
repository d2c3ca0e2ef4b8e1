"""Hostile and broken input to a real ``tunesmith server`` (uvicorn, one worker): every case is
a 4xx in OpenAI's envelope, leaves nothing behind, and keeps the server answering; a job that
cannot train fails at validation with OpenAI's code, naming the line and no server path."""

from __future__ import annotations

import re

import httpx2 as httpx
import pytest
from jobs_harness import chat_rows, jsonl_bytes, service_fixtures, wait_status

pytest.importorskip("fastapi")

MAX_LENGTH = 24  # the worker's train.max_length: the long examples below cannot fit

svc, client = service_fixtures("hardening", workers=1, train_overrides=[f"train.max_length={MAX_LENGTH}"])


def multipart(
    content: bytes,
    *,
    boundary: str = "XyZzYb0undary",
    filename: str = "train.jsonl",
    purpose: str = "fine-tune",
    part_headers: str = "",
) -> bytes:
    """A well-formed ``multipart/form-data`` body: the purpose field, then the file part."""
    b = boundary
    return (
        (
            f'--{b}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
            f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: application/jsonl\r\n{part_headers}\r\n"
        ).encode()
        + content
        + f"\r\n--{b}--\r\n".encode()
    )


def post_upload(http: httpx.Client, body: bytes, boundary: str = "XyZzYb0undary") -> httpx.Response:
    return http.post(
        "/files", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )


@pytest.fixture(scope="module")
def http(svc):
    with httpx.Client(
        base_url=svc.base_url, headers={"Authorization": f"Bearer {svc.key_a}"}, timeout=60
    ) as c:
        yield c


def stored(svc) -> tuple[set, int, list]:
    """(blob names, file rows of project alpha, .incoming entries): what an upload can leave."""
    files = svc.settings.files_dir
    rows = len(svc.client().files.list(limit=10000).data)
    return ({p.name for p in files.iterdir() if p.is_file()}, rows, sorted((files / ".incoming").iterdir()))


def assert_envelope(r: httpx.Response, status: int = 400) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json"), r.headers
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] != "server_error", err
    return err


# -- uploads -------------------------------------------------------------------------------------------
def test_truncated_upload_is_refused_and_leaves_nothing(svc, http):
    body = multipart(jsonl_bytes(chat_rows(12)))
    before = stored(svc)
    for cut in (len(body) * 4 // 9, len(body) - len("--XyZzYb0undary--\r\n"), len(body) - 3):
        err = assert_envelope(post_upload(http, body[:cut]))
        assert "incomplete" in err["message"] and err["param"] == "file"
        assert stored(svc) == before
    assert post_upload(http, body).status_code == 200  # the same body, whole


LONG_HEADER = "X-Padding: " + "a" * 20_000 + "\r\n"
MALFORMED = {
    "5000-character file name": (multipart(b"{}\n", filename="n" * 5000), "XyZzYb0undary"),
    "garbage after a valid boundary": (
        b"--XyZzYb0undary garbage\r\n" + multipart(b"{}\n")[17:],
        "XyZzYb0undary",
    ),
    "mismatched boundary": (multipart(b"{}\n", boundary="OtherBoundary"), "XyZzYb0undary"),
    "20 KB part header": (multipart(b"{}\n", part_headers=LONG_HEADER), "XyZzYb0undary"),
    "300-character boundary": (multipart(b"{}\n", boundary="q" * 300), "q" * 300),
    "a part header without a colon": (multipart(b"{}\n", part_headers="NoColonHere\r\n"), "XyZzYb0undary"),
    "40 parts": (
        b"".join(
            f'--XyZzYb0undary\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nv\r\n'.encode()
            for i in range(40)
        )
        + multipart(b"{}\n"),
        "XyZzYb0undary",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_multipart_is_a_400_and_the_connection_lives(svc, http, case):
    body, boundary = MALFORMED[case]
    before = stored(svc)
    err = assert_envelope(post_upload(http, body, boundary))
    assert err["param"] == "file", err
    assert stored(svc) == before
    assert http.get("/files", params={"limit": 1}).status_code == 200  # same keep-alive client


# -- JSON bodies -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def admin_http(svc):
    key, _ = svc.store.create_key("alpha", admin=True)
    with httpx.Client(base_url=svc.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        yield c


JSON_ROUTES = [
    "/fine_tuning/jobs",
    "/chat/completions",
    "/completions",
    "/fine_tuning/checkpoints/ft:tiny:personal::AAAAAAAA:ckpt-step-1/permissions",
]
HOSTILE_JSON = {
    "5000 brackets": b"[" * 5000,
    "deep object": b'{"a":' * 3000 + b"1" + b"}" * 3000,
    "5000-digit integer": b'{"model": ' + b"9" * 5000 + b"}",
    "NaN": b'{"model": NaN}',
    "not UTF-8": b'{"model": "\xff"}',
}


@pytest.mark.parametrize("route", JSON_ROUTES)
@pytest.mark.parametrize("case", sorted(HOSTILE_JSON))
def test_hostile_json_is_a_400(admin_http, route, case):
    r = admin_http.post(route, content=HOSTILE_JSON[case], headers={"Content-Type": "application/json"})
    err = assert_envelope(r)
    assert err["message"].startswith("The request body is not valid JSON"), err


def test_method_not_allowed_is_an_invalid_request_error(http):
    err = assert_envelope(http.post("/models"), 405)
    assert err["type"] == "invalid_request_error"


# -- create-job numbers ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def train_file(client):
    return client.files.create(
        file=("t.jsonl", jsonl_bytes(chat_rows(12)), "application/jsonl"), purpose="fine-tune"
    )


@pytest.mark.parametrize(
    "hyper",
    [
        {"learning_rate_multiplier": 1e308},
        {"learning_rate_multiplier": 5e-324},
        {"learning_rate_multiplier": 10**400},
        {"n_epochs": 10**400},
    ],
)
def test_unusable_hyperparameters_are_refused_at_the_door(http, train_file, hyper):
    body = {
        "model": "tiny",
        "training_file": train_file.id,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
    }
    err = assert_envelope(http.post("/fine_tuning/jobs", json=body))
    [key] = hyper
    assert (
        err["param"] == f"method.supervised.hyperparameters.{key}" and "must be 'auto' or" in err["message"]
    )


# -- jobs that cannot train fail at validation, naming the file and line, never a server path -----------
def _long_chats(n: int) -> list[dict]:
    prompt = " ".join(["describe the colour of the evening sky over the hills"] * 8)
    return [
        {"messages": [{"role": "user", "content": f"{prompt} {i}"}, {"role": "assistant", "content": "blue"}]}
        for i in range(n)
    ]


FAILED_JOBS: list[str] = []


def test_every_example_too_long_fails_validation(client, svc):
    f = client.files.create(
        file=("long.jsonl", jsonl_bytes(_long_chats(12)), "application/jsonl"), purpose="fine-tune"
    )
    job = client.fine_tuning.jobs.create(model="tiny", training_file=f.id)
    FAILED_JOBS.append(job.id)
    done = wait_status(client, job.id, ("failed", "succeeded"))
    assert done.status == "failed" and done.error.code == "invalid_training_file", done.error
    assert done.error.param == "training_file"
    assert f"first {MAX_LENGTH} tokens" in done.error.message and "Example 1 " in done.error.message
    assert done.trained_tokens is None and done.finished_at is None  # never started training


def test_deeply_nested_training_line_is_a_file_format_error(client):
    rows = [jsonl_bytes([r]) for r in chat_rows(12)]
    rows[3] = b"[" * 5000 + b"]" * 5000 + b"\n"
    f = client.files.create(file=("deep.jsonl", b"".join(rows), "application/jsonl"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="tiny", training_file=f.id)
    FAILED_JOBS.append(job.id)
    done = wait_status(client, job.id, ("failed", "succeeded"))
    assert done.status == "failed" and done.error.code == "invalid_file_format", done.error
    assert re.search(r"\b(Example|line) 4\b", done.error.message), done.error.message


def test_no_server_path_in_any_failed_job_message(client, svc):
    assert len(FAILED_JOBS) == 2  # the jobs of the two tests above
    roots = {
        str(svc.settings.data_dir),
        str(svc.settings.data_dir.resolve()),
        str(svc.root),
        *(str(p) for p in svc.settings.base_models.values()),
    }
    for job_id in FAILED_JOBS:
        job = client.fine_tuning.jobs.retrieve(job_id)
        texts = [job.error.message] + [
            e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=100)
        ]
        for text in texts:
            assert not any(root in text for root in roots), text
            assert not re.search(r"(?<![\w:/])/(?:[\w.-]+/)+", text), text
