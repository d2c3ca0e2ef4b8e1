"""The dashboard's job page renders in a real browser (headless Debian chromium): the job's
facts, its loss curves (training and validation paths in the SVG), checkpoints and events are in
the DOM after the page's JavaScript ran against the API, and the screenshot is not blank.

The job is created through the SDK; its progress (metrics events, checkpoints, success) is written
to the store exactly as a worker writes it, so no training runs here (~5 s)."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "contract"))
from jobs_harness import Service, chat_rows, jsonl_bytes  # noqa: E402

pytest.importorskip("fastapi")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_model_dir):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs Debian's package in CI)")
    svc = Service(tmp_path_factory.mktemp("dash"), {"tiny": tiny_model_dir})
    client = svc.client()
    train = client.files.create(
        file=("t.jsonl", jsonl_bytes(chat_rows(12)), "application/jsonl"), purpose="fine-tune"
    )
    created = client.fine_tuning.jobs.create(model="tiny", training_file=train.id, suffix="dash")
    jid, store = created.id, svc.store
    for step in range(1, 13):  # what the worker publishes from metrics.jsonl
        data = {
            "step": step,
            "train_loss": 2.5 * math.exp(-step / 5),
            "total_steps": 12,
            "train_mean_token_accuracy": 0.1 * step / 12,
        }
        if step % 4 == 0:
            data.update(valid_loss=2.6 * math.exp(-step / 6), valid_mean_token_accuracy=0.05)
        store.add_event(
            jid, f"Step {step}/12: training loss={data['train_loss']:.4f}", type="metrics", data=data
        )
    for step in (4, 8, 12):
        store.add_checkpoint(
            {
                "id": f"ftckpt_dash{step:020d}",
                "job_id": jid,
                "created_at": 1_700_000_000 + step,
                "fine_tuned_model_checkpoint": f"ft:tiny:personal:dash:AbCd1234:ckpt-step-{step}",
                "step_number": step,
                "metrics": {"step": step, "train_loss": 1.0, "valid_loss": 1.1},
            }
        )
    store.update_job(
        jid,
        status="succeeded",
        fine_tuned_model="ft:tiny:personal:dash:AbCd1234",
        finished_at=1_700_000_100,
        trained_tokens=1234,
    )
    store.add_event(jid, "The job has successfully completed")
    yield svc, jid
    svc.close()


def _chromium(tmp_path: Path, url: str, *mode: str) -> subprocess.CompletedProcess:
    # --virtual-time-budget lets the page's fetches and rendering finish before the dump/shot.
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,1400",
            "--virtual-time-budget=10000",
            *mode,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_job_page_renders_curves_checkpoints_and_events(job, tmp_path):
    svc, jid = job
    url = f"http://127.0.0.1:{svc.port}/?key={svc.key_a}#/jobs/{jid}"
    dom = _chromium(tmp_path, url, "--dump-dom").stdout
    assert f'<h2 id="job-title">{jid}</h2>' in dom, dom[-3000:]
    assert "ft:tiny:personal:dash:AbCd1234" in dom and "succeeded" in dom
    paths = {m.group(2): m.group(1) for m in re.finditer(r'<path d="([^"]+)"[^>]*id="(\w+-line)"', dom)}
    assert paths["train-line"].count("L") == 11 and paths["valid-line"].count("L") == 2  # 12 and 3 points
    assert dom.count("ckpt-step-") == 3 and "The job has successfully completed" in dom
    # Another project's key sees no job: the page shows the API's 404 message and no job facts.
    other = _chromium(
        tmp_path, f"http://127.0.0.1:{svc.port}/?key={svc.key_b}#/jobs/{jid}", "--dump-dom"
    ).stdout
    assert f'<p id="status" role="status">No such fine-tuning job: {jid}</p>' in other, other[:3000]
    assert '<h2 id="job-title"></h2>' in other and "AbCd1234" not in other


def test_job_page_screenshot_is_not_blank(job, tmp_path):
    from matplotlib import image

    svc, jid = job
    shot = tmp_path / "job.png"
    proc = _chromium(
        tmp_path, f"http://127.0.0.1:{svc.port}/?key={svc.key_a}#/jobs/{jid}", f"--screenshot={shot}"
    )
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = image.imread(str(shot))[..., :3]  # [H, W, 3] floats in 0..1
    ink = (pixels.min(axis=-1) < 0.9).mean()  # share of pixels that are not (near) white
    colours = len({tuple(p) for p in (pixels[::8, ::8].reshape(-1, 3) * 255).astype(int).tolist()})
    blue = ((pixels[..., 2] > 0.6) & (pixels[..., 0] < 0.3)).sum()  # the training curve (#1f5fbf)
    assert ink > 0.02 and colours > 20 and blue > 200, (ink, colours, blue)
