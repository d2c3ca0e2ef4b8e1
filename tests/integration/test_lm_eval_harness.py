"""``tunesmith eval RUN --lm-eval TASKS``: the real lm-evaluation-harness (HF backend) on the
base and the tuned model, offline, with the shipped local task (examples/support/lm_eval).

The run is a LoRA over a tiny Llama *given as a GGUF file*, so lm-eval gets the base as
tunesmith's dequantised cache folder and the adapter through its ``peft=`` argument.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'tunesmith[lmeval]')")
pytest.importorskip("gguf", reason="the gguf package is not installed (pip install 'tunesmith[export]')")

import tunesmith  # noqa: E402
from tunesmith.errors import ConfigError  # noqa: E402
from tunesmith.eval.evaluate import run_eval  # noqa: E402
from tunesmith.eval.harness import HarnessOptions, task_specs  # noqa: E402
from tunesmith.eval.runner import EvalOptions  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TASK = ROOT / "examples" / "support" / "lm_eval" / "kettle_care_mc.yaml"
DOCS = 12  # documents of the task evaluated (--limit)
ACC = "lm-eval:kettle_care_mc:acc"


@pytest.fixture(scope="module")
def gguf_run(tiny_model_dir, color_data, tmp_path_factory):
    from tunesmith.export.gguf import write_gguf

    root = tmp_path_factory.mktemp("lm-eval")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNESMITH_CACHE_DIR", str(root / "cache"))
        base = root / "tiny-llama.f16.gguf"
        write_gguf(str(tiny_model_dir), str(base), quant="f16")
        out = root / "run"
        tunesmith.train(
            {
                "model": str(base),
                "data": {"train": str(color_data[0])},
                "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
                "train": {"max_steps": 3, "batch_size": 8, "max_length": 64, "lr": 3e-2, "save_every": 3},
                "output_dir": str(out),
            }
        )
        report = run_eval(
            str(out),
            str(color_data[1]),  # tunesmith's own held-out metrics and lm-eval's in one report
            compare_with=["base", "step-3"],
            options=EvalOptions(n_resamples=500, generate=False),
            out_dir=root / "eval",
            lm_eval=HarnessOptions([str(TASK)], limit=DOCS, batch_size=4),
        )
        yield root, out, report


def test_lm_eval_numbers_join_the_report_with_paired_intervals(gguf_run):
    root, out, report = gguf_run
    assert [m["name"] for m in report["models"]] == ["final", "base", "step-000003"]
    harness = report["lm_eval"]
    for name in ("final", "base", "step-000003"):
        own = harness["results"][name]["kettle_care_mc"]
        ours = report["metrics"][name][ACC]
        # tunesmith's series is lm-eval's per-document results: same mean, same count
        assert ours["value"] == pytest.approx(own["acc,none"]) and ours["n"] == DOCS
        assert ours["low"] <= ours["value"] <= ours["high"]
        assert report["metrics"][name]["lm-eval:kettle_care_mc:acc_norm"]["n"] == DOCS
    assert "loss" in report["metrics"]["final"] and "loss" in report["comparisons"][0]["metrics"]
    assert len(report["examples"]) == 24  # the held-out rows; lm-eval's documents are not examples
    cmp, same = report["comparisons"]
    assert (cmp["baseline"], same["baseline"]) == ("base", "step-000003")
    diff = cmp["metrics"][ACC]
    assert diff["win"] + diff["tie"] + diff["loss"] == DOCS
    assert diff["diff"] == pytest.approx(
        report["metrics"]["final"][ACC]["value"] - report["metrics"]["base"][ACC]["value"]
    )
    html = (root / "eval" / "report.html").read_text()
    assert ACC in html and "lm-evaluation-harness" in html
    saved = json.loads((root / "eval" / "report.json").read_text())
    assert saved["lm_eval"]["results"]["final"]["kettle_care_mc"]["acc,none"] == pytest.approx(
        report["metrics"]["final"][ACC]["value"]
    )


def test_a_checkpoint_is_handed_to_lm_eval_as_a_model(gguf_run):
    """step-3 is the last step: the same weights as final/ (loaded by tunesmith and handed over
    as an object, where final/ goes through peft=), so lm-eval scores every document the same."""
    _, _, report = gguf_run
    assert report["lm_eval"]["commands"]["step-000003"] is None
    same = report["comparisons"][1]["metrics"]
    for metric in (ACC, "lm-eval:kettle_care_mc:acc_norm"):
        assert same[metric]["tie"] == DOCS and same[metric]["diff"] == 0, metric


def test_gguf_base_is_the_cache_folder_and_the_adapter_goes_through_peft(gguf_run):
    root, out, report = gguf_run
    commands = report["lm_eval"]["commands"]
    cache = root / "cache" / "gguf"
    assert f"pretrained={cache}" in commands["base"] and "peft=" not in commands["base"]
    assert f"pretrained={cache}" in commands["final"] and f"peft={out / 'final'}" in commands["final"]


def test_the_tuned_model_is_what_lm_eval_scored(gguf_run):
    """Each printed command's model, run through lm-eval directly, gives the report's numbers,
    and the tuned model's log-likelihoods differ from the base's (the adapter was applied)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    _, _, report = gguf_run
    specs, include = task_specs([str(TASK)])
    loglikelihoods = {}
    for name in ("final", "base"):
        command = report["lm_eval"]["commands"][name].split()
        args = dict(part.split("=", 1) for part in command[command.index("--model_args") + 1].split(","))
        lm = HFLM(**args, device="cpu", dtype="float32", batch_size=4)
        direct = simple_evaluate(
            model=lm,
            tasks=specs,
            limit=DOCS,
            log_samples=True,
            task_manager=TaskManager(include_path=include, include_defaults=False),
        )
        assert direct["results"]["kettle_care_mc"]["acc,none"] == pytest.approx(
            report["metrics"][name][ACC]["value"]
        )
        samples = sorted(direct["samples"]["kettle_care_mc"], key=lambda s: s["doc_id"])
        loglikelihoods[name] = [float(r[0][0]) for s in samples for r in s["resps"]]
    assert len(loglikelihoods["final"]) == 4 * DOCS
    assert max(abs(a - b) for a, b in zip(loglikelihoods["final"], loglikelihoods["base"])) > 1e-3


def test_cli_runs_lm_eval_only_when_there_is_no_held_out_file(gguf_run, tmp_path):
    root, out, _ = gguf_run
    env = {"TUNESMITH_CACHE_DIR": str(root / "cache"), "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tunesmith", "eval", str(out), "--lm-eval", str(TASK), "--limit", "4"]
        + ["--out", str(tmp_path / "cli"), "--threads", "1"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=tmp_path,  # the task's relative data file is found from its own folder
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ACC in proc.stdout
    saved = json.loads((tmp_path / "cli" / "report.json").read_text())
    assert saved["metrics"]["final"][ACC]["n"] == 4 and saved["settings"]["data"] is None


def test_bad_task_arguments_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="task file not found"):
        task_specs([str(tmp_path / "missing.yaml")])
    (tmp_path / "bad.yaml").write_text("dataset_path: json\n")
    with pytest.raises(ConfigError, match="needs a 'task:' name"):
        task_specs([str(tmp_path / "bad.yaml")])
