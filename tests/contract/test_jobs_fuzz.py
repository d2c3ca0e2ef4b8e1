"""Property tests: generated hostile requests to every jobs route that takes input.

Each route gets bodies, ids or query strings derived from a valid request (``tests/fuzz.py``;
multipart forms are built and broken here) and must answer cleanly: a success, or a 4xx in
OpenAI's envelope whose type is not ``server_error`` (``fuzz.assert_clean``). After each route's
run the server still answers a normal request and project beta's objects are as they were. Uploads
also hold two exact properties: every body cut before the end of its closing boundary is refused
and leaves nothing behind, and every complete body round-trips byte for byte.

The app is the one ``tunesmith server`` runs (``create_app``, lifespan included), driven in process
through Starlette's TestClient for speed. Example counts: ``fuzz.examples`` (defaults below;
``TUNESMITH_FUZZ_EXAMPLES=5000`` for the long run, docs/hardening.md).
"""

from __future__ import annotations

import json
import string
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("hypothesis")

import fuzz  # noqa: E402
from hypothesis import event, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from jobs_harness import chat_rows, jsonl_bytes  # noqa: E402

B = "TsFuzzB0undary"
COUNTS = {
    "upload": 600,
    "truncation": 400,
    "round_trip": 200,
    "create_job": 600,
    "job_ids": 300,
    "queries": 500,
    "permissions": 400,
    "deletes": 300,
    "chat": 200,
    "completions": 200,
    "models": 200,
}


# -- the server --------------------------------------------------------------------------------------
class Env:
    """An in-process server with two projects: alpha (fuzzed) and beta (must stay untouched)."""

    def __init__(self, root, tiny_model_dir):
        from starlette.testclient import TestClient

        from tunesmith.jobs.app import create_app
        from tunesmith.jobs.settings import Settings
        from tunesmith.jobs.store import Store

        self.settings = Settings(
            db=f"sqlite:///{root / 'jobs.db'}",
            data_dir=root / "data",
            base_models={"tiny": tiny_model_dir},
            max_upload_bytes=256 * 1024,
        )
        self.store = Store(self.settings.db)
        self.app = create_app(self.settings, self.store)
        self.http = TestClient(self.app, raise_server_exceptions=False).__enter__()
        key_a, self.alpha = self.store.create_key("alpha")
        key_b, self.beta = self.store.create_key("beta")
        admin, _ = self.store.create_key("alpha", admin=True)
        self.auth = {"Authorization": f"Bearer {key_a}"}
        self.admin = {"Authorization": f"Bearer {admin}"}
        self.auth_b = {"Authorization": f"Bearer {key_b}"}
        self.file_a = self._upload(self.auth)
        self.job_a = self._job(self.auth, self.file_a)
        self.file_b = self._upload(self.auth_b)
        self.job_b = self._job(self.auth_b, self.file_b)
        self.ckpt = self._shared_checkpoint()
        self.beta_before = self.beta_state()

    def _upload(self, auth) -> str:
        r = self.http.post(
            "/v1/files",
            headers=auth,
            data={"purpose": "fine-tune"},
            files={"file": ("t.jsonl", jsonl_bytes(chat_rows(12)), "application/jsonl")},
        )
        assert r.status_code == 200, r.text
        return r.json()["id"]

    def _job(self, auth, file_id: str) -> str:
        r = self.http.post(
            "/v1/fine_tuning/jobs", headers=auth, json={"model": "tiny", "training_file": file_id}
        )
        assert r.status_code == 200, r.text
        return r.json()["id"]

    def _shared_checkpoint(self) -> str:
        """A succeeded job of alpha's with a checkpoint model, made in the store directly."""
        from tunesmith.jobs import ids
        from tunesmith.jobs.objects import job_model_id

        job = self.store.add_job(
            {
                "id": ids.job_id(),
                "project_id": self.alpha["id"],
                "created_at": 1000,
                "model": "tiny",
                "training_file": self.file_a,
                "validation_file": None,
                "suffix": "fz",
                "seed": 1,
                "status": "succeeded",
                "finished_at": 2000,
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
                "last_step": 1,
                "attempts": 1,
            }
        )
        ckpt = job_model_id(job, self.settings.owner, 1)
        self.store.add_checkpoint(
            {
                "id": ids.checkpoint_id(),
                "job_id": job["id"],
                "created_at": 1500,
                "fine_tuned_model_checkpoint": ckpt,
                "step_number": 1,
                "metrics": {},
            }
        )
        return ckpt

    def beta_state(self) -> tuple:
        """Beta's file (row and bytes), job and events. (Its model list may legitimately gain the
        checkpoint alpha shares with it: the permissions fuzz sends valid grants too.)"""
        get = lambda path: self.http.get(path, headers=self.auth_b)  # noqa: E731
        return (
            get(f"/v1/files/{self.file_b}").json(),
            get(f"/v1/files/{self.file_b}/content").content,
            get(f"/v1/fine_tuning/jobs/{self.job_b}").json(),
            get(f"/v1/fine_tuning/jobs/{self.job_b}/events").json(),
        )

    def stored(self) -> tuple:
        """(blob names, alpha's file rows, .incoming entries)."""
        files = self.settings.files_dir
        rows = len(self.http.get("/v1/files", headers=self.auth, params={"limit": 10000}).json()["data"])
        return (
            {p.name for p in files.iterdir() if p.is_file()},
            rows,
            sorted((files / ".incoming").iterdir()),
        )

    def check_healthy(self) -> None:
        """A normal request works, nothing is mid-upload, and beta's objects are unchanged."""
        assert self.http.get("/v1/files", headers=self.auth, params={"limit": 1}).status_code == 200
        assert list((self.settings.files_dir / ".incoming").iterdir()) == []
        assert self.beta_state() == self.beta_before

    def close(self) -> None:
        self.http.__exit__(None, None, None)
        self.store.dispose()


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model_dir):
    e = Env(tmp_path_factory.mktemp("fuzz"), tiny_model_dir)
    yield e
    e.close()


@pytest.fixture
def healthy_after(env):
    yield
    env.check_healthy()


def answered(r) -> None:
    """``fuzz.assert_clean``, and the status counted (``--hypothesis-show-statistics``)."""
    event(f"HTTP {r.status_code}")
    fuzz.assert_clean(r)


def path_part(text: str) -> str:
    return quote(text, safe="", errors="surrogatepass")


IDS = st.one_of(
    fuzz.STRINGS,
    st.sampled_from(
        [
            "file-" + "A" * 22,
            "ftjob-" + "A" * 24,
            "ft:tiny:personal::AAAAAAAA",
            "ft:tiny:personal:fz:AAAAAAAA:ckpt-step-1",
            "cp_x",
            ".",
            "..",
        ]
    ),
)


# -- uploads ------------------------------------------------------------------------------------------
def _part(headers: list[bytes], data: bytes) -> bytes:
    return b"".join(h + b"\r\n" for h in headers) + b"\r\n" + data


def _form(parts: list[bytes], boundary: bytes, *, end: bytes = b"\r\n") -> bytes:
    return b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts) + b"--" + boundary + b"--" + end


def _file_part(content: bytes, filename: bytes = b"t.jsonl", extra: list[bytes] = ()) -> bytes:
    return _part(
        [
            b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"',
            b"Content-Type: application/jsonl",
            *extra,
        ],
        content,
    )


def _field(name: bytes, value: bytes, extra: list[bytes] = ()) -> bytes:
    return _part([b'Content-Disposition: form-data; name="' + name + b'"', *extra], value)


CONTENT = (
    st.lists(
        st.one_of(
            st.binary(max_size=48),
            st.sampled_from(
                [
                    b"\r\n",
                    b"\x00",
                    b"--",
                    b"\r\n--",
                    b"\r",
                    b"\n",
                    b"--" + B.encode(),
                    B.encode() + b"--",
                    b"\r\n--" + B.encode()[:-1],
                    b"\r\n--" + B.encode()[:5],
                ]
            ),
        ),
        max_size=16,
    )
    .map(b"".join)
    .filter(lambda c: b"\r\n--" + B.encode() not in b"\r\n" + c + b"\r\n")
)
TEXT_BYTES = fuzz.STRINGS.map(lambda s: s.encode("utf-8", "surrogatepass"))
HEADER_LINES = st.one_of(
    st.builds(lambda k, v: b"X-" + k + b": " + v, st.binary(max_size=20), st.binary(max_size=40)),
    st.sampled_from(
        [
            b"NoColon",
            b"",
            b": empty name",
            b"X-Long: " + b"a" * 9000,
            b"Content-Disposition: form-data",
            b'Content-Disposition: form-data; name="file"; filename="second.jsonl"',
        ]
    ),
)


@st.composite
def hostile_forms(draw):
    """(content-type header value, body, the file bytes if the form is intact else None)."""
    content = draw(CONTENT)
    filename, purpose = b"t.jsonl", b"fine-tune"
    intact = True
    if draw(st.booleans()):
        filename, intact = draw(TEXT_BYTES), False
    if draw(st.booleans()):
        purpose, intact = draw(TEXT_BYTES), False
    parts = [_field(b"purpose", purpose), _file_part(content, filename)]
    if draw(st.booleans()):
        parts.insert(1, _field(b"expires_after[anchor]", draw(st.sampled_from([b"created_at", b"x"]))))
        parts.insert(
            2,
            _field(
                b"expires_after[seconds]",
                draw(st.one_of(fuzz.NUMBERS.map(lambda n: str(n).encode()), TEXT_BYTES)),
            ),
        )
        intact = False
    for _ in range(draw(st.integers(0, 2))):
        action = draw(st.sampled_from(["header", "drop", "duplicate", "extra"]))
        i = draw(st.integers(0, len(parts) - 1))
        if action == "header":
            parts[i] = draw(HEADER_LINES) + b"\r\n" + parts[i]
        elif action == "drop":
            parts.pop(i)
        elif action == "duplicate":
            parts.insert(i, parts[i])
        else:
            parts.insert(i, _field(draw(TEXT_BYTES), draw(TEXT_BYTES)))
        intact = False
        if not parts:
            break
    boundary = B.encode()
    body = _form(parts, boundary, end=draw(st.sampled_from([b"\r\n", b"", b"\r\nepilogue"])))
    header = b"multipart/form-data; boundary=" + boundary
    mutation = draw(st.sampled_from(["none", "none", "truncate", "insert", "delete", "boundary", "type"]))
    if mutation != "none":
        intact = False
        at = draw(st.integers(0, len(body)))
        if mutation == "truncate":
            body = body[:at]
        elif mutation == "insert":
            body = body[:at] + draw(st.binary(min_size=1, max_size=32)) + body[at:]
        elif mutation == "delete":
            body = body[:at] + body[at + draw(st.integers(1, 32)) :]
        elif mutation == "boundary":
            header = b"multipart/form-data; boundary=" + draw(
                st.one_of(
                    st.text(string.ascii_letters + string.digits + "'()+_,-./:=? ", max_size=80).map(
                        str.encode
                    ),
                    st.sampled_from([b"", b'""', b'"' + boundary + b'"', b"x" * 300]),
                )
            )
        else:
            header = draw(
                st.sampled_from(
                    [
                        b"",
                        b"application/json",
                        b"multipart/form-data",
                        b"text/plain; boundary=x",
                        b"multipart/mixed; boundary=" + boundary,
                    ]
                )
            )
    return header, body, content if intact else None


def _post_form(env, header: bytes, body: bytes):
    return env.http.post(
        "/v1/files", content=body, headers={**env.auth, "content-type": header.decode("latin-1")}
    )


@fuzz.fuzz_settings(COUNTS["upload"])
@given(form=hostile_forms())
def test_fuzz_upload(env, healthy_after, form):
    header, body, content = form
    before = env.stored()
    r = _post_form(env, header, body)
    answered(r)
    if content is not None:
        assert r.status_code == 200, r.text
    if r.status_code == 200:
        file_id = r.json()["id"]
        got = env.http.get(f"/v1/files/{file_id}/content", headers=env.auth).content
        assert content is None or got == content
        assert env.http.delete(f"/v1/files/{file_id}", headers=env.auth).status_code == 200
    else:
        assert env.stored() == before
    assert list((env.settings.files_dir / ".incoming").iterdir()) == []


def _complete(content: bytes) -> bytes:
    return _form([_field(b"purpose", b"fine-tune"), _file_part(content)], B.encode())


@fuzz.fuzz_settings(COUNTS["truncation"])
@given(content=CONTENT, data=st.data())
def test_fuzz_every_truncated_upload_is_refused_and_leaves_nothing(env, healthy_after, content, data):
    body = _complete(content)
    cut = data.draw(st.integers(0, len(body) - 3), label="cut")  # the closing boundary ends 2 bytes early
    before = env.stored()
    r = _post_form(env, b"multipart/form-data; boundary=" + B.encode(), body[:cut])
    assert r.status_code == 400, (cut, len(body), r.text)
    answered(r)
    assert env.stored() == before


@fuzz.fuzz_settings(COUNTS["round_trip"])
@given(content=CONTENT, end=st.sampled_from([b"\r\n", b"", b"\r\nan epilogue\r\n"]))
def test_fuzz_every_complete_upload_round_trips(env, healthy_after, content, end):
    body = _form([_field(b"purpose", b"fine-tune"), _file_part(content)], B.encode(), end=end)
    r = _post_form(env, b"multipart/form-data; boundary=" + B.encode(), body)
    assert r.status_code == 200, r.text
    file_id = r.json()["id"]
    assert r.json()["bytes"] == len(content)
    assert env.http.get(f"/v1/files/{file_id}/content", headers=env.auth).content == content
    assert env.http.delete(f"/v1/files/{file_id}", headers=env.auth).status_code == 200


# -- JSON bodies -------------------------------------------------------------------------------------
def create_template(env) -> dict:
    return {
        "model": "tiny",
        "training_file": env.file_a,
        "validation_file": env.file_a,
        "suffix": "fz",
        "seed": 7,
        "metadata": {"team": "fuzz"},
        "hyperparameters": {"n_epochs": 1},
        "method": {
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 2, "batch_size": 1, "learning_rate_multiplier": 0.5}
            },
        },
    }


@fuzz.fuzz_settings(COUNTS["create_job"])
@given(data=st.data())
def test_fuzz_create_job(env, healthy_after, data):
    body = data.draw(fuzz.bodies(create_template(env)), label="body")
    r = env.http.post(
        "/v1/fine_tuning/jobs", content=body, headers={**env.auth, "content-type": "application/json"}
    )
    answered(r)


@fuzz.fuzz_settings(COUNTS["permissions"])
@given(data=st.data(), ckpt=st.one_of(st.none(), IDS))
def test_fuzz_permissions(env, healthy_after, data, ckpt):
    target = path_part(env.ckpt if ckpt is None else ckpt)
    body = data.draw(fuzz.bodies({"project_ids": [env.beta["id"], env.alpha["id"]]}), label="body")
    r = env.http.post(
        f"/v1/fine_tuning/checkpoints/{target}/permissions",
        content=body,
        headers={**env.admin, "content-type": "application/json"},
    )
    answered(r)


def _clamp(body: bytes) -> bytes:
    """Keep generation tiny whatever the fuzzer put in the token counts (speed, not safety)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # not JSON: sent as it is
        return body
    if isinstance(value, dict):
        for key in ("max_tokens", "max_completion_tokens", "n", "best_of"):
            if isinstance(value.get(key), int) and not isinstance(value[key], bool) and value[key] > 3:
                value[key] = 2
    return json.dumps(value).encode()


@fuzz.fuzz_settings(COUNTS["chat"])
@given(data=st.data())
def test_fuzz_chat_completions(env, healthy_after, data):
    template = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    body = data.draw(fuzz.bodies(template).map(_clamp), label="body")
    r = env.http.post(
        "/v1/chat/completions", content=body, headers={**env.auth, "content-type": "application/json"}
    )
    answered(r)


@fuzz.fuzz_settings(COUNTS["completions"])
@given(data=st.data())
def test_fuzz_completions(env, healthy_after, data):
    body = data.draw(
        fuzz.bodies({"model": "tiny", "prompt": "hi", "max_tokens": 2}).map(_clamp), label="body"
    )
    r = env.http.post(
        "/v1/completions", content=body, headers={**env.auth, "content-type": "application/json"}
    )
    answered(r)


# -- ids and query strings ------------------------------------------------------------------------------
JOB_ROUTES = [
    ("POST", "/v1/fine_tuning/jobs/{}/pause"),
    ("POST", "/v1/fine_tuning/jobs/{}/resume"),
    ("POST", "/v1/fine_tuning/jobs/{}/cancel"),
    ("GET", "/v1/fine_tuning/jobs/{}"),
    ("GET", "/v1/fine_tuning/jobs/{}/events"),
    ("GET", "/v1/fine_tuning/jobs/{}/checkpoints"),
]


@fuzz.fuzz_settings(COUNTS["job_ids"])
@given(
    route=st.sampled_from(JOB_ROUTES), job_id=st.one_of(IDS, st.sampled_from(["alpha's job", "beta's job"]))
)
def test_fuzz_job_routes_with_hostile_ids(env, healthy_after, route, job_id):
    method, path = route
    real = {"alpha's job": env.job_a, "beta's job": env.job_b}.get(job_id)
    r = env.http.request(method, path.format(path_part(real or job_id)), headers=env.auth)
    answered(r)
    if real == env.job_b:
        assert r.status_code == 404  # another project's job answers like a missing one


QUERY_KEYS = st.one_of(
    st.sampled_from(
        ["limit", "after", "order", "purpose", "project_id", "metadata[team]", "metadata[]", "metadata[a][b]"]
    ),
    fuzz.STRINGS,
)
QUERY_VALUES = st.one_of(
    fuzz.STRINGS, fuzz.NUMBERS.map(str), st.sampled_from(["asc", "desc", "ascending", "0"])
)
LISTS = [
    "/v1/files",
    "/v1/fine_tuning/jobs",
    "/v1/fine_tuning/jobs/{job}/events",
    "/v1/fine_tuning/jobs/{job}/checkpoints",
    "/v1/fine_tuning/checkpoints/{ckpt}/permissions",
    "/v1/models",
]


@fuzz.fuzz_settings(COUNTS["queries"])
@given(path=st.sampled_from(LISTS), params=st.lists(st.tuples(QUERY_KEYS, QUERY_VALUES), max_size=5))
def test_fuzz_list_queries(env, healthy_after, path, params):
    url = path.format(job=env.job_a, ckpt=path_part(env.ckpt))
    query = "&".join(f"{path_part(k)}={path_part(v)}" for k, v in params)
    r = env.http.get(f"{url}?{query}", headers=env.admin)
    answered(r)


DELETES = [
    "/v1/files/{}",
    "/v1/models/{}",
    "/v1/fine_tuning/checkpoints/{ckpt}/permissions/{}",
    "/v1/fine_tuning/checkpoints/{}/permissions/{}",
]


@fuzz.fuzz_settings(COUNTS["deletes"])
@given(path=st.sampled_from(DELETES), first=st.one_of(IDS, st.just("beta's file")), second=IDS)
def test_fuzz_deletes(env, healthy_after, path, first, second):
    first = env.file_b if first == "beta's file" else first
    url = path.replace("{ckpt}", path_part(env.ckpt)).format(path_part(first), path_part(second))
    r = env.http.delete(url, headers=env.admin)
    answered(r)


@fuzz.fuzz_settings(COUNTS["models"])
@given(
    model=st.one_of(IDS, fuzz.STRINGS.map(lambda s: "ft:tiny:" + s)),
    method=st.sampled_from(["GET", "DELETE"]),
)
def test_fuzz_models(env, healthy_after, model, method):
    r = env.http.request(method, f"/v1/models/{path_part(model)}", headers=env.auth)
    answered(r)
