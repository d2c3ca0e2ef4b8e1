"""``train.report_to``: a tiny LoRA run reports to every installed tracker, offline, and each
tracker's own reader gives back the rows of metrics.jsonl, the resolved config and the artefacts
(MLflow's file store through MlflowClient, W&B's offline run file, TensorBoard's
EventAccumulator, trackio's local SQLite store)."""

from __future__ import annotations

import importlib.util
import json
import struct

import pytest
import yaml

import tunesmith
from tunesmith.config import load_config, validate
from tunesmith.config import trackers as tracker_names
from tunesmith.errors import ConfigError

INSTALLED = [name for name, (module, _) in tracker_names.TRACKERS.items() if importlib.util.find_spec(module)]


def _need(name: str):
    if name not in INSTALLED:
        pytest.skip(f"{tracker_names.TRACKERS[name][1]} is not installed (pip install 'tunesmith[trackers]')")


def _cfg(model, data, out, steps, report_to):
    return {
        "model": str(model),
        "data": {"train": str(data[0]), "eval": str(data[1])},
        "adapter": {"type": "lora", "r": 2, "alpha": 4, "dropout": 0.0},
        "train": {
            "max_steps": steps,
            "batch_size": 4,
            "max_length": 64,
            "lr": 1e-2,
            "save_every": 2,
            "eval_every": 2,
            "eval_at_start": True,
            "progress": "none",
            "report_to": report_to,
            "report_project": "tunesmith-test",
        },
        "output_dir": str(out),
    }


@pytest.fixture(scope="module")
def tracked_run(tiny_model_dir, color_data, tmp_path_factory):
    """Trains 2 steps, then resumes to 4 (one tracker run continued), reporting to every
    installed tracker with offline, test-local stores."""
    if not INSTALLED:
        pytest.skip("no tracker package is installed (pip install 'tunesmith[trackers]')")
    root = tmp_path_factory.mktemp("tracked")
    env = {
        # MLflow 3 keeps the file store only on request; the default (sqlite:///mlflow.db) is
        # tested by test_mlflow_default_sqlite_store below.
        "MLFLOW_TRACKING_URI": (root / "mlruns").as_uri(),
        "MLFLOW_ALLOW_FILE_STORE": "true",
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(root / "wandb-dir"),
        "WANDB_CACHE_DIR": str(root / "wandb-cache"),
        "WANDB_CONFIG_DIR": str(root / "wandb-config"),
        "WANDB_DATA_DIR": str(root / "wandb-data"),
        "TRACKIO_DIR": str(root / "trackio"),
    }
    (root / "wandb-dir").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        out = root / "run"
        tunesmith.train(_cfg(tiny_model_dir, color_data, out, 2, INSTALLED))
        tunesmith.train(_cfg(tiny_model_dir, color_data, out, 4, INSTALLED))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return root, out, rows


def _series(rows, key):
    return {r["step"]: r[key] for r in rows if key in r}


def test_metrics_rows_are_the_ones_trackers_get(tracked_run):
    _, _, rows = tracked_run
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert set(_series(rows, "eval_loss")) == {0, 2, 4}


def test_mlflow_file_store_holds_metrics_params_and_artefacts(tracked_run):
    _need("mlflow")
    from mlflow.tracking import MlflowClient

    root, out, rows = tracked_run
    client = MlflowClient((root / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("tunesmith-test")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, "the resumed training continued the same MLflow run"
    run = runs[0]
    assert run.info.run_name == out.name and run.info.status == "FINISHED"
    for key in ("loss", "lr", "eval_loss", "tokens_per_s"):
        history = client.get_metric_history(run.info.run_id, key)
        assert {m.step: m.value for m in history} == pytest.approx(_series(rows, key), rel=1e-6), key
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    params = run.data.params
    assert params["train.lr"] == json.dumps(resolved["train"]["lr"])
    assert params["model.path"] == resolved["model"]["path"]
    assert json.loads(params["train.report_to"]) == INSTALLED
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "final"} <= files
    final = {a.path for a in client.list_artifacts(run.info.run_id, "final")}
    assert {"final/adapter_config.json", "final/adapter_model.safetensors"} <= final


def _wandb_records(path):
    """The records of a W&B ``.wandb`` run file, parsed with wandb's own protobuf schema.

    wandb 0.31 ships no Python reader for it (its Go core writes and syncs it), so this reads
    the container: the header ``:W&B`` + 2-byte magic + 1-byte version, then LevelDB-log
    records in 32 KiB blocks (4-byte CRC, 2-byte length, 1-byte type: 1 whole, 2/3/4 the
    first / middle / last piece of a record split across blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, pieces = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is zero padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pieces = chunk if kind in (1, 2) else pieces + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pieces)
            yield record


def test_wandb_offline_run_holds_metrics_config_and_artefacts(tracked_run):
    _need("wandb")
    root, out, rows = tracked_run
    files = sorted((root / "wandb-dir" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2, "one offline run file per process (the resumed one continues its id)"
    assert len({f.name for f in files}) == 1
    history, config, artefacts = {}, {}, {}
    for path in files:
        for record in _wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                items = record.history.item
                values = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}
                history.setdefault(record.history.step.num, {}).update(values)
            elif kind == "run":
                config.update({u.key: json.loads(u.value_json) for u in record.run.config.update})
            elif kind == "artifact":
                artefacts[record.artifact.type] = [e.path for e in record.artifact.manifest.contents]
    for key in ("loss", "lr", "eval_loss"):
        got = {step: values[key] for step, values in history.items() if key in values}
        assert got == pytest.approx(_series(rows, key), rel=1e-6), key
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert config["train"]["lr"] == resolved["train"]["lr"]
    assert config["adapter"]["r"] == 2
    assert artefacts["report"] == ["report.html"]
    assert {"final/adapter_config.json", "final/adapter_model.safetensors"} <= set(artefacts["model"])


def test_tensorboard_events_hold_every_row_once(tracked_run):
    _need("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, out, rows = tracked_run
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    for key in ("loss", "lr", "eval_loss", "accuracy"):
        # the resume purged nothing it did not replay: each step once, with the file's value
        events = acc.Scalars(key)
        assert [e.step for e in events] == sorted(_series(rows, key)), key
        assert {e.step: e.value for e in events} == pytest.approx(_series(rows, key), rel=1e-6), key
    texts = acc.Tags()["tensors"]
    assert "config/text_summary" in texts and "artifacts/report/text_summary" in texts


def test_trackio_local_store_holds_metrics_config_and_artefacts(tracked_run):
    _need("trackio")
    root, out, rows = tracked_run
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRACKIO_DIR", str(root / "trackio"))
        import importlib

        import trackio.sqlite_storage as storage

        importlib.reload(storage)  # the store's folder is read from the environment at import
        assert storage.SQLiteStorage.get_runs("tunesmith-test") == [out.name]
        logs = storage.SQLiteStorage.get_logs("tunesmith-test", out.name)
        for key in ("loss", "eval_loss"):
            got = {r["step"]: r[key] for r in logs if key in r}
            assert got == pytest.approx(_series(rows, key), rel=1e-6), key
        config = storage.SQLiteStorage.get_run_config("tunesmith-test", out.name)
        assert config["adapter.r"] == "2"
        names = {a["name"] for a in storage.SQLiteStorage.list_artifacts("tunesmith-test")}
        assert {f"{out.name}-report", f"{out.name}-model"} <= names


def test_mlflow_default_sqlite_store(tiny_model_dir, color_data, tmp_path, monkeypatch):
    """With no MLFLOW_TRACKING_URI, MLflow 3's default store (sqlite:///mlflow.db in the working
    folder) takes the run."""
    _need("mlflow")
    if importlib.util.find_spec("alembic") is None:
        pytest.skip("MLflow's SQLite store needs alembic (pip install 'tunesmith[trackers]')")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    tunesmith.train(_cfg(tiny_model_dir, color_data, tmp_path / "run", 1, ["mlflow"]))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("tunesmith-test").experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1]


def test_a_tracker_not_installed_is_a_config_error_naming_its_package(
    tiny_model_dir, color_data, monkeypatch
):
    monkeypatch.setitem(tracker_names.TRACKERS, "wandb", ("tunesmith_no_such_module", "wandb"))
    cfg = _cfg(tiny_model_dir, color_data, "unused", 1, ["tensorboard", "wandb"])
    with pytest.raises(
        ConfigError, match=r"names wandb, but its package is not installed: pip install wandb"
    ):
        validate(load_config(cfg))


def test_report_to_names_are_checked():
    with pytest.raises(
        ConfigError, match=r"'train.report_to\[0\]' = 'mlfow' is not one of .*Did you mean 'mlflow'"
    ):
        load_config({"train": {"report_to": ["mlfow"]}})
