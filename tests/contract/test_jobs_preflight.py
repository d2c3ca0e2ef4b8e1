"""``POST /v1/dashboard/preflight`` (the dashboard's view of a job before it starts) and
``GET /v1/dashboard/jobs/{id}/report``, over HTTP against a real server and the tiny Llama.

The preflight reports exactly what ``tunesmith data check`` reports (errors with their lines,
token statistics), the PII ``data scrub`` would redact (where, never the text), the
hyperparameters with "auto" resolved as the worker resolves them, and ``tunesmith estimate``'s
memory estimate of the very run config the worker would write."""

from __future__ import annotations

import json

import pytest
from jobs_harness import chat_rows, jsonl_bytes, service_fixtures, upload

pytest.importorskip("fastapi")
svc, client = service_fixtures("preflight", train_overrides=["train.max_length=64"])


def _preflight(svc, body: dict, key: str | None = None):
    import httpx

    return httpx.post(
        f"{svc.base_url}/dashboard/preflight",
        json=body,
        headers={"Authorization": f"Bearer {key or svc.key_a}"},
        timeout=120,
    )


def test_clean_file_reports_tokens_resolved_auto_and_estimates(svc, client, tiny_model_dir):
    from tunesmith.config.auto import auto_batch_size, auto_epochs
    from tunesmith.data.tools.check import check_file
    from tunesmith.models.load import load_tokenizer

    rows = chat_rows(24)
    train = upload(client, rows)
    r = _preflight(svc, {"model": "tiny", "training_file": train.id, "suffix": "x"})
    assert r.status_code == 200, r.text
    out = r.json()
    report = out["files"]["report"]
    assert report["ok"] and report["n_examples"] == 24 and report["path"] == train.id
    # the same numbers as `tunesmith data check --model tiny` on the same bytes
    local = svc.root / "same.jsonl"
    local.write_bytes(jsonl_bytes(rows))
    expected = check_file(local, tokenizer=load_tokenizer(tiny_model_dir), max_length=64).to_dict()
    assert report["stats"]["tokens"] == expected["stats"]["tokens"]
    h = out["hyperparameters"]
    assert h["requested"] == {"batch_size": "auto", "learning_rate_multiplier": "auto", "n_epochs": "auto"}
    assert h["resolved"]["n_epochs"] == auto_epochs(24) and h["resolved"]["batch_size"] == auto_batch_size(24)
    assert h["learning_rate"] == pytest.approx(2e-4) and h["max_length"] == 64
    assert h["total_steps"] == h["steps_per_epoch"] * auto_epochs(24)
    memory, time = out["estimate"]["memory"], out["estimate"]["time"]
    assert memory["mode"] == "lora" and memory["peak"] > memory["weights"] > 0, out["estimate"]
    assert 0 < memory["trainable_params"] < memory["params"]
    assert time["epochs"] == auto_epochs(24) and time["seconds"] == pytest.approx(
        time["seconds_per_epoch"] * time["epochs"]
    )
    assert out["base_model"] == {"name": "tiny", "format": "hf"}
    assert out["files"]["pii"]["total"] == 0 and out["files"]["pii"]["rows"] == 24


def test_bad_lines_and_pii_are_listed_with_their_lines(svc, client):
    rows = chat_rows(12)
    rows[2]["messages"][-1]["content"] = "mail me at jane.doe@example.com please"
    body = b"".join(json.dumps(r).encode() + b"\n" for r in rows[:4])
    body += b'{"messages": [{"role": "user", "content": "hi"}\n'  # line 5: broken JSON
    body += b'{"messages": [{"role": "wizard", "content": "hi"}]}\n'  # line 6: unknown role
    body += b"".join(json.dumps(r).encode() + b"\n" for r in rows[4:])
    train = client.files.create(file=("bad.jsonl", body, "application/jsonl"), purpose="fine-tune")
    valid = upload(client, chat_rows(3, seed=5), name="valid.jsonl")
    out = _preflight(svc, {"model": "tiny", "training_file": train.id, "validation_file": valid.id}).json()
    report = out["files"]["report"]
    assert not report["ok"]
    lines = {e["code"]: e["line"] for e in report["errors"]}
    assert lines["invalid_json"] == 5 and lines["unrecognized_role"] == 6, report["errors"]
    assert all("/" not in e["message"].split("Example")[0] for e in report["errors"])
    pii = out["files"]["pii"]
    assert pii["by_type"] == {"EMAIL": 1} and pii["rows"] == 13 + 3  # the broken line 5 is not a row
    field = f"messages[{len(rows[2]['messages']) - 1}].content"
    assert pii["findings"] == [
        {"file": "training_file", "line": 3, "field": field, "type": "EMAIL", "length": 20}
    ]
    assert "jane" not in json.dumps(pii)


def test_dpo_and_reinforcement_are_checked_as_the_worker_checks_them(svc, client):
    import factory

    pairs = upload(client, factory.preference_pairs(12, style="openai"), name="dpo.jsonl")
    out = _preflight(
        svc,
        {
            "model": "tiny",
            "training_file": pairs.id,
            "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": "auto", "n_epochs": 2}}},
        },
    ).json()
    assert out["files"]["report"]["ok"], out["files"]["report"]["errors"][:3]
    assert out["hyperparameters"]["resolved"]["beta"] == 0.1
    assert out["hyperparameters"]["resolved"]["n_epochs"] == 2
    prompts = [{"messages": [{"role": "user", "content": f"say {i}"}], "answer": str(i)} for i in range(11)]
    prompts.append({"messages": [{"role": "user", "content": "no answer key"}]})  # line 12
    rft = upload(client, prompts, name="rft.jsonl")
    grader = {"type": "string_check", "name": "exact", "operation": "eq",
              "input": "{{sample.output_text}}", "reference": "{{item.answer}}"}  # fmt: skip
    out = _preflight(
        svc,
        {
            "model": "tiny",
            "training_file": rft.id,
            "method": {"type": "reinforcement", "reinforcement": {"grader": grader}},
        },
    ).json()
    report = out["files"]["report"]
    assert [e["line"] for e in report["errors"]] == [12], report["errors"]
    assert "answer" in report["errors"][0]["message"]
    assert out["estimate"]["time"] is None and any("reinforcement" in n for n in out["estimate"]["notes"])


def test_preflight_refuses_what_the_create_refuses(svc, client):
    train = upload(client, chat_rows(12))
    r = _preflight(svc, {"model": "nope", "training_file": train.id})
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_available"
    r = _preflight(svc, {"model": "tiny", "training_file": train.id}, key=svc.key_b)  # beta's view
    assert r.status_code == 400 and r.json()["error"]["param"] == "training_file"
    r = _preflight(svc, {"model": "tiny", "training_file": train.id, "hyperparameters": {"n_epochs": 99}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "hyperparameters.n_epochs"
    import httpx

    r = httpx.post(f"{svc.base_url}/dashboard/preflight", json={}, timeout=30)
    assert r.status_code == 401


def test_report_route_serves_the_run_report_without_server_paths(svc, client):
    import httpx

    train = upload(client, chat_rows(12))
    job = client.fine_tuning.jobs.create(model="tiny", training_file=train.id)
    url = f"{svc.base_url}/dashboard/jobs/{job.id}/report"
    auth = {"Authorization": f"Bearer {svc.key_a}"}
    r = httpx.get(url, headers=auth)
    assert r.status_code == 404 and "no evaluation report" in r.json()["error"]["message"]
    run = svc.settings.run_dir(job.id)
    run.mkdir(parents=True, exist_ok=True)
    image = "data:image/png;base64,iVBORw0KGgo/AAA/BBB+/CCC="
    (run / "report.html").write_text(
        f"<html><body><p>model {svc.settings.base_models['tiny']}</p><p>out {run}/final</p>"
        f'<p>/etc/secret/place</p><img src="{image}"></body></html>'
    )
    r = httpx.get(url, headers=auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert (
        "model model tiny" in r.text and f"job {job.id}/final" in r.text and "&lt;server path&gt;" in r.text
    )
    assert image in r.text and str(svc.root) not in r.text
    assert "sandbox" in r.headers["content-security-policy"]
    assert httpx.get(url, headers={"Authorization": f"Bearer {svc.key_b}"}).status_code == 404


def test_a_gguf_base_model_is_checked_and_estimated_like_a_folder(tmp_path, tiny_model_dir, monkeypatch):
    """A ``--base-model NAME=file.gguf`` (dequantised once into the cache) gets the same report."""
    from jobs_harness import Service

    from tunesmith.export.gguf import write_gguf

    monkeypatch.setenv("TUNESMITH_CACHE_DIR", str(tmp_path / "cache"))
    gguf = tmp_path / "tiny.f16.gguf"
    write_gguf(str(tiny_model_dir), str(gguf), quant="f16")
    (tmp_path / "svc").mkdir()
    s = Service(
        tmp_path / "svc", {"tiny": tiny_model_dir, "tinygguf": gguf}, train_overrides=["train.max_length=64"]
    )
    try:
        train = upload(s.client(), chat_rows(12))
        both = {
            m: _preflight(s, {"model": m, "training_file": train.id}).json() for m in ("tiny", "tinygguf")
        }
    finally:
        s.close()
    assert both["tinygguf"]["base_model"] == {"name": "tinygguf", "format": "gguf"}
    g, f = both["tinygguf"], both["tiny"]
    assert (
        g["files"]["report"]["ok"]
        and g["files"]["report"]["stats"]["tokens"] == f["files"]["report"]["stats"]["tokens"]
    )
    assert g["estimate"]["memory"]["params"] == f["estimate"]["memory"]["params"], g["estimate"]
    assert g["estimate"]["time"]["flops_per_token"] == f["estimate"]["time"]["flops_per_token"]


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        b'{"model": "tiny"}',
        b'{"model": "tiny", "training_file": "file-nope"}',
        b'{"model": "tiny", "training_file": "../../etc/passwd"}',
        b'{"model": "ft:tiny:personal:x:AbCd1234:ckpt-step-1", "training_file": "file-x"}',
        b'{"model": "tiny", "training_file": "file-x", "method": {"type": "reinforcement"}}',
        b'{"model": "tiny", "training_file": "file-x", "bogus": 1}',
        b'{"model": "tiny\\u0000", "training_file": "file-x"}',
    ],
)
def test_hostile_preflight_bodies_are_400s_in_the_envelope(svc, raw):
    import httpx

    r = httpx.post(
        f"{svc.base_url}/dashboard/preflight",
        content=raw,
        headers={"Authorization": f"Bearer {svc.key_a}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"]


@pytest.mark.parametrize(
    "job_id", ["..", "ftjob-..%2F..%2Fetc", "%2e%2e%2Fpasswd", "ftjob-" + "a" * 5000, "x%00y"]
)
def test_hostile_report_ids_are_404s(svc, job_id):
    import httpx

    r = httpx.get(
        f"{svc.base_url}/dashboard/jobs/{job_id}/report", headers={"Authorization": f"Bearer {svc.key_a}"}
    )
    assert r.status_code in (400, 404), r.text
    assert r.json()["error"]["message"]
