"""Property tests for the reinforcement surface: hostile bodies derived from a valid RFT
create-job request and from valid ``graders/validate`` / ``graders/run`` requests (string_check,
multi, score_model; ``tests/fuzz.py`` mutations) always get a success or a 4xx in OpenAI's
envelope, never a 5xx (``fuzz.assert_clean``). ``TUNESMITH_FUZZ_EXAMPLES`` scales the counts."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("hypothesis")

import fuzz  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from jobs_harness import jsonl_bytes  # noqa: E402
from test_jobs_rft import LETTER, rft_rows  # noqa: E402

MULTI = {"type": "multi", "name": "m", "calculate_output": "a * 2 + min(a, 1)", "graders": {"a": LETTER}}
SIMILAR = {
    "type": "text_similarity",
    "name": "s",
    "evaluation_metric": "fuzzy_match",
    "input": "{{sample.output_text}}",
    "reference": "{{item.letter}}",
}


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model_dir):
    from starlette.testclient import TestClient

    from tunesmith.jobs.app import create_app
    from tunesmith.jobs.settings import Settings
    from tunesmith.jobs.store import Store

    root = tmp_path_factory.mktemp("rftfuzz")
    settings = Settings(
        db=f"sqlite:///{root / 'jobs.db'}", data_dir=root / "data", base_models={"tiny": tiny_model_dir}
    )
    store = Store(settings.db)
    http = TestClient(create_app(settings, store), raise_server_exceptions=False).__enter__()
    key, _ = store.create_key("alpha")
    auth = {"Authorization": f"Bearer {key}"}
    r = http.post(
        "/v1/files",
        headers=auth,
        data={"purpose": "fine-tune"},
        files={"file": ("t.jsonl", jsonl_bytes(rft_rows(10, 1)), "application/jsonl")},
    )
    yield http, auth, r.json()["id"]
    http.__exit__(None, None, None)
    store.dispose()


def _post(env, path: str, body: bytes):
    http, auth, _ = env
    r = http.post(path, content=body, headers={**auth, "content-type": "application/json"})
    fuzz.assert_clean(r)


@fuzz.fuzz_settings(300)
@given(data=st.data(), grader=st.sampled_from([LETTER, MULTI, SIMILAR]))
def test_fuzz_create_rft_job(env, data, grader):
    template = {
        "model": "tiny",
        "training_file": env[2],
        "method": {
            "type": "reinforcement",
            "reinforcement": {
                "grader": grader,
                "hyperparameters": {
                    "n_epochs": 1,
                    "compute_multiplier": 0.5,
                    "eval_interval": 2,
                    "reasoning_effort": "low",
                },
            },
        },
    }
    _post(env, "/v1/fine_tuning/jobs", data.draw(fuzz.bodies(template), label="body"))


@fuzz.fuzz_settings(300)
@given(data=st.data(), grader=st.sampled_from([LETTER, MULTI, SIMILAR]))
def test_fuzz_grader_routes(env, data, grader):
    _post(
        env, "/v1/fine_tuning/alpha/graders/validate", data.draw(fuzz.bodies({"grader": grader}), label="v")
    )
    run = {"grader": grader, "model_sample": "yes", "item": {"letter": "e"}}
    _post(env, "/v1/fine_tuning/alpha/graders/run", data.draw(fuzz.bodies(run), label="run"))
