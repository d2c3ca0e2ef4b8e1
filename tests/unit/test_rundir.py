"""The run folder's layout (tunesmith.rundir): names on disk, step naming, and the one rule
"a run folder or a model/adapter folder → the folder to load". Changing any of these breaks
existing runs, jobs and exports, so the values are pinned here literally."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith import rundir
from tunesmith.rundir import RunDir


def test_names_on_disk():
    assert rundir.FINAL == "final"
    assert rundir.CHECKPOINTS == "checkpoints"
    assert rundir.SERVED_CHECKPOINTS == "served-checkpoints"
    assert rundir.MARKER == "COMMITTED"
    assert rundir.RESOLVED_CONFIG == "config.resolved.yaml"
    assert rundir.RUN_INFO == "run.json"
    assert rundir.METRICS == "metrics.jsonl"
    assert rundir.TENSORBOARD == "tensorboard"
    assert rundir.TRACKERS == "trackers.json"
    assert rundir.CHECKPOINT_GLOB == "step-*"


def test_checkpoint_module_takes_its_marker_from_rundir():
    from tunesmith.engine import checkpoint as ckpt

    assert ckpt.MARKER is rundir.MARKER


def test_checkpoint_name_and_step_of():
    assert rundir.checkpoint_name(50) == "step-000050"
    assert rundir.checkpoint_name(0) == "step-000000"
    assert rundir.checkpoint_name(1234567) == "step-1234567"
    assert rundir.step_of("step-000050") == 50
    assert rundir.step_of(Path("/x/checkpoints/step-1234567")) == 1234567
    for step in (0, 7, 999999, 10**7):
        assert rundir.step_of(rundir.checkpoint_name(step)) == step
    for name in ("step-", "step-12a", "step--1", ".tmp-step-000050", "checkpoint-50", "final", "step-²"):
        assert rundir.step_of(name) is None, name


def test_paths(tmp_path):
    run = RunDir(tmp_path)
    assert run == RunDir(str(tmp_path)) and run.root == tmp_path
    assert run.final == tmp_path / "final"
    assert run.checkpoints == tmp_path / "checkpoints"
    assert run.checkpoint(50) == tmp_path / "checkpoints" / "step-000050"
    assert run.served_checkpoint(3) == tmp_path / "served-checkpoints" / "step-000003"
    assert run.resolved_config == tmp_path / "config.resolved.yaml"
    assert run.run_info == tmp_path / "run.json"
    assert run.metrics == tmp_path / "metrics.jsonl"
    assert run.tensorboard == tmp_path / "tensorboard"
    assert run.trackers == tmp_path / "trackers.json"
    assert not any(tmp_path.iterdir())  # paths only, nothing created


def test_readers(tmp_path):
    run = RunDir(tmp_path)
    assert run.read_metrics() == [] and run.read_metrics(skip_bad=True) == []
    run.run_info.write_text(json.dumps({"total_steps": 4}), encoding="utf-8")
    assert run.read_run_info() == {"total_steps": 4}
    run.resolved_config.write_text("method: sft\nmodel: {path: m}\n", encoding="utf-8")
    assert run.read_resolved_config() == {"method": "sft", "model": {"path": "m"}}
    run.resolved_config.write_text("", encoding="utf-8")
    assert run.read_resolved_config() == {}
    run.metrics.write_text('{"step": 1, "loss": 2.0}\n\n{"step": 1, "eval_loss": 1.5}\n', encoding="utf-8")
    assert run.read_metrics() == [{"step": 1, "loss": 2.0}, {"step": 1, "eval_loss": 1.5}]
    run.metrics.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n[1]\n{"step": 3}\n', encoding="utf-8")
    with pytest.raises(ValueError):
        run.read_metrics()
    assert run.read_metrics(skip_bad=True) == [{"step": 1, "loss": 2.0}, {"step": 3}]


def _adapter(p: Path) -> Path:
    p.mkdir(parents=True)
    (p / "adapter_config.json").write_text("{}", encoding="utf-8")
    return p


def test_model_folder_run_adapter_and_model(tmp_path):
    run = tmp_path / "runs" / "x"
    final = _adapter(run / "final")
    (run / "config.resolved.yaml").write_text("{}", encoding="utf-8")
    (run / "run.json").write_text("{}", encoding="utf-8")
    assert rundir.is_run_dir(run) and not rundir.is_run_dir(final)
    assert rundir.model_folder(run) == final  # a run stands for its final/
    assert rundir.model_folder(str(run)) == final
    assert rundir.model_folder(final) == final  # an adapter folder is itself
    model = tmp_path / "model"
    (model / "final").mkdir(parents=True)
    (model / "config.json").write_text("{}", encoding="utf-8")
    assert rundir.model_folder(model) == model  # a model folder with a "final" subfolder is itself
    assert rundir.model_folder(tmp_path / "absent") == tmp_path / "absent"
    assert rundir.model_folder("org/hub-id") == Path("org/hub-id")
    unfinished = tmp_path / "runs" / "y"
    (unfinished / "checkpoints").mkdir(parents=True)
    assert rundir.model_folder(unfinished) == unfinished  # no final/ yet: callers report it


def test_run_of_and_names(tmp_path):
    run = tmp_path / "runs" / "x"
    final = _adapter(run / "final")
    assert rundir.run_of(final) is None  # no run.json: not (yet) a run
    (run / "run.json").write_text("{}", encoding="utf-8")
    assert rundir.run_of(final) == run and rundir.run_of(run) == run
    assert rundir.run_of(_adapter(tmp_path / "loose")) is None
    assert rundir.is_final(final) and rundir.is_final("runs/x/final") and not rundir.is_final(run)
    assert rundir.folder_name(final) == "x" and rundir.folder_name(run) == "x"
    assert rundir.folder_name(tmp_path / "loose") == "loose"


def test_resolve_model_ref_uses_the_rule(tmp_path):
    from tunesmith.errors import ModelError
    from tunesmith.models.generate import resolve_model_ref

    run = tmp_path / "run"
    final = _adapter(run / "final")
    (final / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/base"}))
    assert resolve_model_ref(str(run)) == ("/base", str(final))
    assert resolve_model_ref(str(final)) == ("/base", str(final))
    assert resolve_model_ref(str(run), "/other") == (str(final), "/other")
    (final / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelError, match="does not name its base model"):
        resolve_model_ref(str(run))


def test_teacher_adapter_run_dir_resolves_to_final(tmp_path):
    from tunesmith.errors import ModelError
    from tunesmith.methods.distill_teacher import resolve_teacher

    run = tmp_path / "run"
    _adapter(run / "final")
    (run / "final" / "config.json").unlink(missing_ok=True)
    with pytest.raises(ModelError, match="teacher_adapter .* has no adapter_config.json"):
        resolve_teacher(str(tmp_path / "teacher"), str(tmp_path / "nothing"))
    with pytest.raises(ModelError, match="distill.teacher: .* is not a model folder"):
        resolve_teacher(str(tmp_path / "teacher"), str(run))  # the adapter resolved; the teacher is missing


def test_rundir_is_torch_free():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, tunesmith.rundir; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"
