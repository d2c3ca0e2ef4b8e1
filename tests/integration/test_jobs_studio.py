"""The dashboard as a studio, driven in a real browser: Playwright driving Debian's Chromium
against a real ``tunesmith server`` (uvicorn on loopback) with a real worker training the tiny
Llama. The tests run in order, as a user would: upload → data-check findings → create → live
curve (and the run's report) → playground answer from the fine-tuned model beside its base →
compare two jobs → continue from a checkpoint, pause / resume / cancel.

Screenshots of every step go to ``runs/dashboard-e2e/`` (gitignored; ``TUNESMITH_SCREENSHOTS``
overrides). Skips, with the reason, where Playwright or Chromium is missing (scripts/setup.sh
installs both under CI=true)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "contract"))
from jobs_harness import Service, chat_rows, jsonl_bytes, wait_status  # noqa: E402

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
CHROMIUM = next(
    (
        p
        for p in ("/usr/lib/chromium/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
        if p and Path(p).is_file()
    ),
    None,
)
SHOTS = Path(
    os.environ.get("TUNESMITH_SCREENSHOTS") or Path(__file__).resolve().parents[2] / "runs" / "dashboard-e2e"
)
TIMEOUT_MS = 120_000
state: dict = {}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_model_dir):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs Debian's package in CI)")
    s = Service(
        tmp_path_factory.mktemp("studio"),
        {"tiny": tiny_model_dir},
        poll_interval=0.2,
        train_overrides=["train.max_length=64"],
    )
    s.start_worker()
    yield s
    s.close()


@pytest.fixture(scope="module")
def page(svc):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        pg = browser.new_page(viewport={"width": 1280, "height": 1000})
        pg.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto(f"http://127.0.0.1:{svc.port}/?key={svc.key_a}&poll=300#/")
        yield pg
        browser.close()
        (SHOTS / "index.json").write_text(json.dumps(sorted(p.name for p in SHOTS.glob("*.png")), indent=1))
        assert not errors, errors  # no uncaught JavaScript error on any page


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _file(name: str, rows_or_bytes) -> dict:
    data = rows_or_bytes if isinstance(rows_or_bytes, bytes) else jsonl_bytes(rows_or_bytes)
    return {"name": name, "mimeType": "application/jsonl", "buffer": data}


def test_upload_shows_the_data_check_before_starting(page):
    page.goto(page.url.split("#")[0] + "#/new")
    page.wait_for_selector("#new-model option[value=tiny]", state="attached")
    rows = chat_rows(12)
    bad = jsonl_bytes(rows[:3]) + b'{"messages": [{"role": "user", "content": "hi"}\n' + jsonl_bytes(rows[3:])
    page.set_input_files("#train-file", _file("bad.jsonl", bad))
    page.wait_for_selector("#check-verdict.bad")
    errors = page.inner_text("#check-errors")
    assert "invalid_json" in errors and re.search(r"training\s+4\s+invalid_json", errors), errors
    assert page.is_disabled("#new-submit")  # a file with errors cannot start a job
    shot(page, "01-data-check-errors")

    good = chat_rows(24, seed=3)
    good[5]["messages"][-1]["content"] = "write to ana.lopez@example.org for that."
    page.set_input_files("#train-file", _file("train.jsonl", good))
    page.wait_for_selector("#check-verdict.ok")
    page.set_input_files("#valid-file", _file("valid.jsonl", chat_rows(6, seed=9)))
    page.wait_for_function("document.querySelector('#check-verdict').textContent.includes('6 validation')")
    assert "EMAIL × 1" in page.inner_text("#pii-summary")
    assert "6" in page.inner_text("#pii-findings")  # the line of the e-mail
    tokens = page.inner_text("#check-tokens")
    assert "24" in tokens and "over max_length 64" in tokens, tokens


def test_create_shows_auto_resolved_and_the_estimate_then_starts_the_job(page, svc):
    page.fill("#new-suffix", "studio")
    page.fill("#hp-n_epochs", "2")
    page.fill("#hp-batch_size", "4")
    page.fill("#new-seed", "7")
    page.wait_for_function(
        "document.querySelector('#resolved') && document.querySelector('#resolved').textContent.includes('2')"
    )
    page.wait_for_function("!document.querySelector('#new-submit').disabled")
    resolved = page.inner_text("#resolved")
    assert "auto" in resolved and "1" in resolved  # learning_rate_multiplier: auto -> 1
    estimate = page.inner_text("#estimate")
    assert "peak memory" in estimate and "time ≈" in estimate and "lora" in estimate, estimate
    shot(page, "02-create-preflight")
    page.click("#new-submit")
    page.wait_for_url(re.compile(r"#/jobs/ftjob-"))
    state["job"] = page.url.rsplit("/", 1)[1]
    job = svc.client().fine_tuning.jobs.retrieve(state["job"])
    assert svc.store.get_job(None, job.id)["suffix"] == "studio" and job.seed == 7 and job.validation_file
    assert job.method.supervised.hyperparameters.n_epochs == 2


def test_live_curve_with_ticks_then_the_report(page, svc):
    jid = state["job"]
    # live: the curve is drawn from the running job's metrics events, refreshed while it runs
    # live: the page, never reloaded, redraws the curve as the worker publishes steps
    seen, shot_taken, deadline = [], False, time.time() + 240
    while time.time() < deadline:
        n, state_ = page.evaluate(
            "[((document.querySelector('#train-line') || {getAttribute: () => ''}).getAttribute('d') || '')"
            ".split(/[ML]/).length - 1, document.querySelector('#job-facts .st').textContent]"
        )
        seen.append(n)
        if n and not shot_taken and state_ == "running":
            shot(page, "03-job-live-curve")  # mid-run
            shot_taken = True
        if state_ == "succeeded" and page.is_visible("#report-box"):
            break
        time.sleep(0.1)
    assert seen[0] < seen[-1] == 12, seen  # fewer points (often none) when the page first showed the job
    d = page.get_attribute("#train-line", "d")
    client = svc.client()
    assert client.fine_tuning.jobs.retrieve(jid).status == "succeeded"
    steps = [
        e.data["step"]
        for e in client.fine_tuning.jobs.list_events(jid, limit=100).data
        if e.type == "metrics"
    ]
    assert d.count("L") == len(steps) - 1 and len(steps) == 12, (d, steps)  # 24 rows / 4 × 2 epochs
    assert page.locator("#valid-line").count() == 1
    xt = page.locator("#chart .xtick-label").all_text_contents()
    assert "0" in xt and "12" in xt, xt
    assert len(page.locator("#chart .ytick-label").all_text_contents()) >= 3
    assert (
        page.text_content("#chart .ylabel").startswith("loss")
        and page.text_content("#chart .xlabel") == "step"
    )
    assert page.locator("#checkpoints tbody tr").count() >= 1
    frame = page.frame_locator("#report")
    assert "loss" in frame.locator("body").inner_text().lower()
    shot(page, "04-job-finished-with-report")


def test_playground_streams_the_fine_tuned_model_beside_its_base(page, svc):
    page.click("#job-chat")
    page.wait_for_url(re.compile(r"#/playground"))
    page.wait_for_function("document.querySelector('#pg-left').value.startsWith('ft:')")
    assert page.input_value("#pg-right") == "tiny"
    page.fill("#pg-prompt", "what color is the sky?")
    page.fill("#pg-max", "12")
    page.click("#pg-send")
    page.wait_for_selector("#pg-left-out[data-done='1']")
    page.wait_for_selector("#pg-right-out[data-done='1']")
    left, right = page.inner_text("#pg-left-out"), page.inner_text("#pg-right-out")
    assert not left.startswith("error") and not right.startswith("error"), (left, right)
    assert int(page.get_attribute("#pg-left-out", "data-chunks")) >= 2  # streamed, chunk by chunk
    assert page.inner_text("#pg-left-out") != "" and page.inner_text("#pg-right-out") != ""
    # the same answer as the API gives (greedy), so the page shows what the model says
    reply = svc.client().chat.completions.create(
        model=page.input_value("#pg-left"),
        messages=[{"role": "user", "content": "what color is the sky?"}],
        max_tokens=12,
        temperature=0,
    )
    assert left == reply.choices[0].message.content
    shot(page, "05-playground-side-by-side")
    # a checkpoint beside its base, from the job page's checkpoint table
    page.goto(page.url.split("#")[0] + f"#/jobs/{state['job']}")
    page.click("#checkpoints .ckpt-chat >> nth=-1")
    page.wait_for_function("document.querySelector('#pg-left').value.endsWith(':ckpt-step-6')")
    page.click("#pg-send")
    page.wait_for_selector("#pg-left-out[data-done='1']")
    assert not page.inner_text("#pg-left-out").startswith("error"), page.inner_text("#pg-left-out")


def test_compare_overlays_two_jobs(page, svc):
    client = svc.client()
    train = client.files.create(
        file=("t.jsonl", jsonl_bytes(chat_rows(16, seed=4)), "application/jsonl"), purpose="fine-tune"
    )
    valid = client.files.create(
        file=("v.jsonl", jsonl_bytes(chat_rows(4, seed=6)), "application/jsonl"), purpose="fine-tune"
    )
    other = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=train.id,
        validation_file=valid.id,
        suffix="hot",
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 5}
            },
        },
    )
    wait_status(client, other.id, ("succeeded",), timeout=240)
    page.goto(page.url.split("#")[0] + "#/")
    page.wait_for_selector(f"input.pick[value={other.id}]")
    page.check(f"input.pick[value={other.id}]")
    page.check(f"input.pick[value={state['job']}]")
    page.click("#compare-selected")
    page.wait_for_selector("#compare-chart path.series >> nth=1")
    names = [page.locator("#compare-chart path.series").nth(i).get_attribute("data-name") for i in range(2)]
    assert any(n.startswith("studio") for n in names) and any(n.startswith("hot") for n in names), names
    shot(page, "06-compare-training-loss")
    page.select_option("#compare-metric", "valid_loss")
    page.wait_for_function(
        "document.querySelector('#compare-chart .ylabel').textContent.startsWith('validation loss')"
    )
    assert page.locator("#compare-chart path.series").count() == 2


def test_continue_from_a_checkpoint_then_pause_resume_cancel(page, svc):
    svc.stop_workers()  # the new job stays where the page's buttons put it
    page.goto(page.url.split("#")[0] + f"#/jobs/{state['job']}")
    page.click("#checkpoints .ckpt-continue >> nth=0")
    page.wait_for_url(re.compile(r"#/new\?model=ft%3A"))
    page.wait_for_function("document.querySelector('#new-model').value.includes(':ckpt-step-')")
    page.set_input_files("#train-file", _file("more.jsonl", chat_rows(12, seed=8)))
    page.wait_for_function("!document.querySelector('#new-submit').disabled")
    page.click("#new-submit")
    page.wait_for_url(re.compile(r"#/jobs/ftjob-"))
    jid = page.url.rsplit("/", 1)[1]
    client = svc.client()
    assert ":ckpt-step-" in client.fine_tuning.jobs.retrieve(jid).model
    page.wait_for_selector("#job-facts .st-validating_files")
    page.click("#job-pause")
    page.wait_for_selector("#job-facts .st-paused")
    assert page.is_enabled("#job-resume") and page.is_disabled("#job-pause")
    page.click("#job-resume")
    page.wait_for_selector("#job-facts .st-validating_files")
    page.click("#job-cancel")
    page.wait_for_selector("#job-facts .st-cancelled")
    assert client.fine_tuning.jobs.retrieve(jid).status == "cancelled"
    assert page.is_disabled("#job-cancel")
    events = page.inner_text("#events")
    assert "Fine-tuning job paused" in events and "Fine-tuning job cancelled" in events
    shot(page, "07-continued-job-cancelled")


def test_reinforcement_grader_editor_file_check_and_reward_curve(page, svc):
    """The RFT path of the form (workers are stopped by now): the grader editor validates and runs
    a grader on a sample through the grader routes, an RFT file is checked as the worker checks
    it (a row without the key the grader reads is an error on its line), and a reinforcement
    job's page plots its reward curves (metrics events as the worker publishes them)."""
    page.goto(page.url.split("#")[0] + "#/new")
    page.wait_for_selector("#new-model option[value=tiny]", state="attached")
    page.select_option("#new-model", "tiny")
    page.select_option("#new-method", "reinforcement")
    page.wait_for_selector("#grader-box:not([hidden])")
    assert page.is_visible("#hp-compute_multiplier") and not page.is_visible("#hp-beta")
    assert json.loads(page.input_value("#grader"))["type"] == "string_check"
    page.click("#grader-validate")
    page.wait_for_function("document.querySelector('#grader-out').textContent === 'valid'")
    page.fill("#grader-sample", "4")
    page.fill("#grader-item", '{"answer": "4"}')
    page.click("#grader-run")
    page.wait_for_function("document.querySelector('#grader-out').textContent.startsWith('reward 1')")
    rows = [{"messages": [{"role": "user", "content": f"{i} + 1?"}], "answer": str(i + 1)} for i in range(11)]
    rows.insert(4, {"messages": [{"role": "user", "content": "no answer here"}]})  # line 5
    page.set_input_files("#valid-file", [])
    page.set_input_files("#train-file", _file("rft.jsonl", rows))
    page.wait_for_selector("#check-verdict.bad")
    errors = page.inner_text("#check-errors")
    assert re.search(r"training\s+5\s+\w+", errors) and "answer" in errors, errors
    shot(page, "08-reinforcement-grader-and-check")

    client = svc.client()
    good = [r for r in rows if "answer" in r]
    train = client.files.create(
        file=("r.jsonl", jsonl_bytes(good * 2), "application/jsonl"), purpose="fine-tune"
    )
    grader = json.loads(page.input_value("#grader"))
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=train.id,
        method={"type": "reinforcement", "reinforcement": {"grader": grader}},
    )
    for step in range(1, 7):  # the data of the worker's reinforcement metrics events (jobs/rft_metrics.py)
        data = {"step": step, "total_steps": 6, "train_mean_reward": step / 6, "train_loss": 0.1}
        if step % 3 == 0:
            data["full_valid_mean_reward"] = step / 7
        svc.store.add_event(
            job.id, f"Step {step}/6 , train mean reward={step / 6:.2f}", type="metrics", data=data
        )
    page.goto(page.url.split("#")[0] + f"#/jobs/{job.id}")
    page.wait_for_selector("#reward-line")
    assert page.inner_text("#chart-title") == "Reward"
    assert page.text_content("#chart .ylabel") == "mean reward"
    assert page.get_attribute("#reward-line", "d").count("L") == 5
    assert page.get_attribute("#valid-reward-line", "d").count("L") == 1
    shot(page, "09-reward-curve")


@pytest.mark.parametrize(
    ("lo", "hi", "count", "ticks"),
    [
        # step = the smallest of 1, 2, 5 x 10^k at least (hi - lo) / count, from floor(lo / step)
        (0.013, 0.087, 5, [0, 0.02, 0.04, 0.06, 0.08, 0.1]),  # 0.0148 -> 0.02
        (0, 12, 8, [0, 2, 4, 6, 8, 10, 12]),  # the step axis: 1.5 -> 2
        (0, 12, 5, [0, 5, 10, 15]),  # 2.4 -> 5
        (5.65, 5.78, 5, [5.65, 5.7, 5.75, 5.8]),  # 0.026 -> 0.05
        (3, 3, 5, [2.6, 2.8, 3, 3.2, 3.4]),  # one value: padded by 10 % to 2.7 .. 3.3; 0.12 -> 0.2
    ],
)
def test_chart_ticks_are_round_numbers_covering_the_data(page, lo, hi, count, ticks):
    got = page.evaluate(f"tsChart.niceTicks({lo}, {hi}, {count}).ticks")
    assert got == pytest.approx(ticks), got
