"""Experiment trackers (``train.report_to``): one small adapter per library, behind one set.

Contract of every adapter:

- ``metrics(row)`` — one row exactly as written to ``metrics.jsonl`` (its numbers, at ``row["step"]``);
  :class:`tunesmith.engine.metrics.MetricsFile`, the one writer of metric rows, calls it;
- ``artifact(path, kind)`` — a file (``kind="report"``: report.html) or a folder
  (``kind="model"``: final/) to keep with the tracker run;
- ``finish(ok)`` — close the run, marked failed when ``ok`` is false.

The resolved config is logged as the run's parameters when the run is opened. Only rank 0
opens trackers (:func:`open_trackers` is called by ``tunesmith.run.train`` on the main process).

A resumed training run continues the same tracker run where the library can: the run ids are
kept in ``OUTPUT_DIR/trackers.json``; MLflow reopens its run by id, W&B resumes its id, trackio
its run name, and TensorBoard purges events from the resumed step on (rows after the checkpoint
are replayed, see :class:`~tunesmith.engine.metrics.MetricsFile`). MLflow, W&B and trackio keep
both copies of a replayed step; their charts draw the later one over the earlier.

A tracker that fails while training (a server that went away) is warned about once and dropped:
the metrics file and the checkpoints still hold everything, and a dashboard must not stop a run.
Failing to open one is an error, before the first step.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

from .. import rundir
from ..config import RunConfig, config_to_dict
from ..config.trackers import trackers_of
from ..errors import ConfigError

log = logging.getLogger("tunesmith")

DEFAULT_PROJECT = "tunesmith"


def numbers(row: dict) -> dict[str, float]:
    """The numeric fields of a metrics row, ``step`` excluded (booleans and text are not metrics)."""
    return {
        k: float(v)
        for k, v in row.items()
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def flat_params(cfg: RunConfig) -> dict[str, str]:
    """The resolved config as ``section.key -> text`` (lists and mappings as JSON)."""
    out: dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
                walk(value, name + ".")
            else:
                out[name] = value if isinstance(value, str) else json.dumps(value)

    walk(config_to_dict(cfg), "")
    return out


def _safe_name(text: str) -> str:
    """An artefact name W&B and trackio accept (letters, digits, ``.``, ``_``, ``-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


# -- adapters ----------------------------------------------------------------------------------
class TensorBoardTracker:
    """Scalars to ``OUTPUT_DIR/tensorboard`` (torch's SummaryWriter); the config as a text
    summary. TensorBoard stores no files, so the artefacts are recorded as their paths."""

    def __init__(self, out: Path, cfg: RunConfig, resume_step: int | None, state: dict):
        from torch.utils.tensorboard import SummaryWriter

        # Resuming from step S replays steps S+1.. : drop the events a killed run wrote there.
        purge = resume_step + 1 if resume_step is not None else None
        self.writer = SummaryWriter(str(rundir.RunDir(out).tensorboard), purge_step=purge)
        if resume_step is None:
            import yaml

            text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
            self.writer.add_text("config", "```\n" + text + "```", 0)

    def metrics(self, row: dict) -> None:
        for key, value in numbers(row).items():
            self.writer.add_scalar(key, value, row["step"])
        self.writer.flush()

    def artifact(self, path: Path, kind: str) -> None:
        self.writer.add_text(f"artifacts/{kind}", str(Path(path).resolve()))

    def finish(self, ok: bool) -> None:
        self.writer.close()


class MlflowTracker:
    """An MLflow run (through ``MlflowClient``, no global active run) in the experiment
    ``project``, at ``$MLFLOW_TRACKING_URI`` (MLflow's default: ``sqlite:///mlflow.db``)."""

    def __init__(self, out: Path, cfg: RunConfig, resume_step: int | None, state: dict):
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        self._metric = Metric
        self._pending: list = []
        self.client = MlflowClient()
        project = cfg.train.report_project or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_PROJECT
        experiment = self.client.get_experiment_by_name(project)
        exp_id = experiment.experiment_id if experiment else self.client.create_experiment(project)
        run_id = state.get("mlflow") if resume_step is not None else None
        if run_id and self.client.get_run(run_id).info.experiment_id == exp_id:
            self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                exp_id,
                run_name=Path(out).resolve().name,
                tags={"tunesmith.output_dir": str(Path(out).resolve())},
            )
            run_id = run.info.run_id
            params = [Param(k, v[:6000]) for k, v in flat_params(cfg).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(run_id, params=params[i : i + 100])
        self.run_id = state["mlflow"] = run_id

    def metrics(self, row: dict) -> None:
        now = int(time.time() * 1000)
        rows = [self._metric(k, v, now, int(row["step"])) for k, v in numbers(row).items()]
        # Queued, not awaited: a synchronous write to the SQLite store costs ~27 ms per row on
        # this machine (0.1 ms queued); finish() waits for the queue. Errors surface there.
        op = self.client.log_batch(self.run_id, metrics=rows, synchronous=False)
        if op is not None:
            self._pending.append(op)

    def artifact(self, path: Path, kind: str) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path=path.name)
        else:
            self.client.log_artifact(self.run_id, str(path))

    def finish(self, ok: bool) -> None:
        for op in self._pending:
            op.wait()
        self._pending = []
        self.client.set_terminated(self.run_id, status="FINISHED" if ok else "FAILED")


class WandbTracker:
    """A W&B run in ``project`` (``WANDB_MODE=offline`` writes it under ``OUTPUT_DIR/wandb``
    for ``wandb sync`` later); the config as its nested ``config``; artefacts as W&B Artifacts
    named ``<run>-report`` / ``<run>-model``."""

    def __init__(self, out: Path, cfg: RunConfig, resume_step: int | None, state: dict):
        import wandb

        self._wandb = wandb
        out = Path(out).resolve()
        self.name = out.name
        resume_id = state.get("wandb") if resume_step is not None else None
        self.run = wandb.init(
            project=cfg.train.report_project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            name=self.name,
            dir=os.environ.get("WANDB_DIR") or str(out),
            config=config_to_dict(cfg),
            id=resume_id,
            resume="allow" if resume_id else None,
            # stdout stays tunesmith's (the progress bar); train.log already keeps the log
            settings=wandb.Settings(console="off", silent=True),
        )
        state["wandb"] = self.run.id

    def metrics(self, row: dict) -> None:
        self.run.log(numbers(row), step=int(row["step"]))

    def artifact(self, path: Path, kind: str) -> None:
        path = Path(path)
        art = self._wandb.Artifact(_safe_name(f"{self.name}-{kind}"), type=kind)
        if path.is_dir():
            art.add_dir(str(path), name=path.name)
        else:
            art.add_file(str(path))
        self.run.log_artifact(art)

    def finish(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


class TrackioTracker:
    """A trackio run (local SQLite under ``$TRACKIO_DIR``, or a Space when trackio is set up
    for one) in ``project``; artefacts through ``trackio.log_artifact``."""

    def __init__(self, out: Path, cfg: RunConfig, resume_step: int | None, state: dict):
        import trackio

        self._trackio = trackio
        self.name = Path(out).resolve().name
        self.run = trackio.init(
            project=cfg.train.report_project or DEFAULT_PROJECT,
            name=state.get("trackio") if resume_step is not None and state.get("trackio") else self.name,
            config=flat_params(cfg),
            resume="allow" if resume_step is not None else "never",
        )
        state["trackio"] = self.run.name

    def metrics(self, row: dict) -> None:
        self.run.log(numbers(row), step=int(row["step"]))

    def artifact(self, path: Path, kind: str) -> None:
        self._trackio.log_artifact(Path(path), name=_safe_name(f"{self.name}-{kind}"), type=kind)

    def finish(self, ok: bool) -> None:
        self.run.finish()


ADAPTERS = {
    "tensorboard": TensorBoardTracker,
    "mlflow": MlflowTracker,
    "wandb": WandbTracker,
    "trackio": TrackioTracker,
}


# -- the set a run reports to ------------------------------------------------------------------
class Trackers:
    """The trackers of one run. Empty (every call a no-op) when ``train.report_to`` names none
    or on ranks other than 0."""

    def __init__(self, adapters: dict[str, object] | None = None):
        self.adapters = dict(adapters or {})

    def __bool__(self) -> bool:
        return bool(self.adapters)

    def _each(self, what: str, call) -> None:
        for name, adapter in list(self.adapters.items()):
            try:
                call(adapter)
            except Exception as exc:  # noqa: BLE001 - a dashboard must not stop a run (module doc)
                log.warning(
                    "%s: %s failed (%s: %s); no longer reporting to it", name, what, type(exc).__name__, exc
                )
                self.adapters.pop(name, None)

    def metrics(self, row: dict) -> None:
        self._each("logging metrics", lambda a: a.metrics(row))

    def artifact(self, path: Path | None, kind: str) -> None:
        if path is not None and Path(path).exists():
            self._each(f"storing {Path(path).name}", lambda a: a.artifact(Path(path), kind))

    def finish(self, ok: bool = True) -> None:
        self._each("closing the run", lambda a: a.finish(ok))
        self.adapters.clear()


def open_trackers(cfg: RunConfig, out: Path, resume_step: int | None) -> Trackers:
    """Open the trackers of ``cfg.train`` for the run folder ``out``; ``resume_step``: the
    checkpoint step training resumes from (None: a fresh run). Opening one that fails (a bad
    tracking URI …) closes those already open and raises ConfigError naming the tracker."""
    names = trackers_of(cfg.train)
    if not names:
        return Trackers()
    state_path = rundir.RunDir(out).trackers
    state = {}
    if resume_step is not None and state_path.is_file():
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except ValueError:
            log.warning("%s is not JSON; the trackers start new runs", state_path)
    opened = Trackers()
    for name in names:
        try:
            opened.adapters[name] = ADAPTERS[name](out, cfg, resume_step, state)
        except Exception as exc:  # noqa: BLE001 - any library error becomes one clear message
            opened.finish(ok=False)
            raise ConfigError(
                f"config: 'train.report_to': could not start the {name} run: {type(exc).__name__}: {exc}"
            ) from exc
    state_path.write_text(json.dumps(state, indent=1), encoding="utf-8")
    log.info("reporting to %s", ", ".join(names))
    return opened
