"""The one owner of a run folder's layout, and its readers. Torch-free (the web stack imports it).

A run folder (``train.output_dir``, a job's ``RUN``) holds::

    config.resolved.yaml        the full config the run trained with (written before training)
    run.json                    versions, data fingerprint, parameter counts, total steps;
                                ``result`` added when training ends
    metrics.jsonl               one JSON object per optimizer step and per evaluation
    tensorboard/                TensorBoard events (``train.report_to: [tensorboard]``)
    trackers.json               the experiment trackers' run ids, so a resumed run continues them
    profile.json                where profiled steps spent their time (``train.profile_steps``)
    checkpoints/step-000050/    one checkpoint per save, ``COMMITTED`` written last
                                (format: engine.checkpoint, which writes and verifies them)
    final/                      the result: a PEFT adapter folder or a whole model folder
    served-checkpoints/step-000050/   a checkpoint exported as a PEFT adapter (jobs/infer.py)

Every other module takes these names and paths from here; ``tests/unit/test_rundir.py`` pins them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

FINAL = "final"
CHECKPOINTS = "checkpoints"
SERVED_CHECKPOINTS = "served-checkpoints"
MARKER = "COMMITTED"
RESOLVED_CONFIG = "config.resolved.yaml"
RUN_INFO = "run.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
TRACKERS = "trackers.json"
PROFILE = "profile.json"
CHECKPOINT_PREFIX = "step-"
CHECKPOINT_GLOB = CHECKPOINT_PREFIX + "*"
MODEL_CONFIG = "config.json"  # a Hugging Face model folder
ADAPTER_CONFIG = "adapter_config.json"  # a PEFT adapter folder


def checkpoint_name(step: int) -> str:
    """``step-000050`` for step 50 (six digits, more when the step needs them)."""
    return f"{CHECKPOINT_PREFIX}{step:06d}"


def step_of(path: str | Path) -> int | None:
    """The step of a checkpoint folder named ``step-N`` (any number of digits); None otherwise."""
    name = Path(path).name
    digits = name[len(CHECKPOINT_PREFIX) :]
    if not name.startswith(CHECKPOINT_PREFIX) or not digits.isdecimal():
        return None
    return int(digits)


@dataclass(frozen=True)
class RunDir:
    """The paths of one run folder (nothing is created or checked)."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def final(self) -> Path:
        return self.root / FINAL

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / checkpoint_name(step)

    @property
    def served_checkpoints(self) -> Path:
        return self.root / SERVED_CHECKPOINTS

    def served_checkpoint(self, step: int) -> Path:
        return self.served_checkpoints / checkpoint_name(step)

    @property
    def resolved_config(self) -> Path:
        return self.root / RESOLVED_CONFIG

    @property
    def run_info(self) -> Path:
        return self.root / RUN_INFO

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD

    @property
    def trackers(self) -> Path:
        return self.root / TRACKERS

    @property
    def profile(self) -> Path:
        return self.root / PROFILE

    # -- readers ---------------------------------------------------------------------------
    def read_run_info(self) -> dict:
        """``run.json`` as a dict (OSError / ValueError when missing or unreadable)."""
        return json.loads(self.run_info.read_text(encoding="utf-8"))

    def read_resolved_config(self) -> dict:
        """``config.resolved.yaml`` as plain YAML data ({} when empty); yaml.YAMLError when bad.
        (``config.load_config`` turns it into a typed RunConfig.)"""
        import yaml

        return yaml.safe_load(self.resolved_config.read_text(encoding="utf-8")) or {}

    def read_metrics(self, *, skip_bad: bool = False) -> list[dict]:
        """The rows of ``metrics.jsonl`` in file order ([] when absent). A line that is not
        JSON raises ValueError, or with ``skip_bad`` is skipped (as are non-object rows)."""
        if not self.metrics.exists():
            return []
        rows = []
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            if not skip_bad:
                rows.append(json.loads(line))
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a run folder (it holds ``config.resolved.yaml``)."""
    p = Path(path)
    return p.is_dir() and (p / RESOLVED_CONFIG).is_file()


def is_final(path: str | Path) -> bool:
    """Whether ``path`` is a run's result folder (named ``final``)."""
    return Path(path).name == FINAL


def model_folder(path: str | Path) -> Path:
    """The one rule for "a run folder or a model/adapter folder → the folder to load": a folder
    with a ``final/`` and no ``config.json`` of its own is a run and stands for its ``final/``;
    anything else is itself (an adapter folder, a model folder, a GGUF file, a hub id)."""
    p = Path(path)
    if (p / FINAL).is_dir() and not (p / MODEL_CONFIG).is_file():
        return p / FINAL
    return p


def run_of(folder: str | Path) -> Path | None:
    """The run folder a result folder came from: ``folder`` itself or its parent (``runs/x`` for
    ``runs/x/final``), whichever holds ``run.json``; None for a folder outside a run."""
    folder = Path(folder)
    for cand in (folder, folder.parent):
        if (cand / RUN_INFO).is_file():
            return cand
    return None


def folder_name(path: str | Path) -> str:
    """A folder's display name: its own, or the run's for ``runs/x/final`` (resolved first)."""
    p = Path(path).resolve()
    return p.parent.name if is_final(p) else p.name
