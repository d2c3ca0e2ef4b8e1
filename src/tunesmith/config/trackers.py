"""The experiment trackers ``train.report_to`` may name, and the check that each is installed.

Torch-free, like the rest of :mod:`tunesmith.config`: the adapters that talk to the trackers
are :mod:`tunesmith.engine.trackers`; this module only knows their names and packages, so a
missing package is a config error before any model loads.
"""

from __future__ import annotations

import importlib.util

from ..errors import ConfigError

# name in train.report_to -> (module imported, pip requirement that provides it). MLflow's
# default store since 3.x is SQLite (``sqlite:///mlflow.db``), which needs alembic and
# SQLAlchemy beside mlflow-skinny; the full ``mlflow`` package brings both.
TRACKERS: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow"),
    "wandb": ("wandb", "wandb"),
    "trackio": ("trackio", "trackio"),
}
TRACKER_NAMES = tuple(TRACKERS)


def trackers_of(train) -> list[str]:
    """The trackers a run reports to: ``train.report_to`` in order without repeats, plus
    tensorboard when the older ``train.tensorboard: true`` asks for it."""
    names = list(dict.fromkeys(train.report_to))
    if train.tensorboard and "tensorboard" not in names:
        names.append("tensorboard")
    return names


def check_trackers(train) -> None:
    """ConfigError naming the package to install for each tracker of :func:`trackers_of` that
    is not importable."""
    missing = [name for name in trackers_of(train) if importlib.util.find_spec(TRACKERS[name][0]) is None]
    if missing:
        packages = " ".join(TRACKERS[name][1] for name in missing)
        raise ConfigError(
            f"config: 'train.report_to' (or train.tensorboard) names {', '.join(missing)}, but "
            f"{'its package is' if len(missing) == 1 else 'their packages are'} not installed: "
            f"pip install {packages}  (or pip install 'tunesmith[trackers]' for all of them)"
        )
