"""Operator settings shared by ``tunesmith server`` and ``tunesmith worker``.

Both read the same database (``db``) and data folder (``data_dir``: uploaded files under
``files/``, job runs under ``runs/``); on several machines, point them at one PostgreSQL URL and
a shared file system. ``base_models`` is the allow-list: model name (as clients pass it in
``model``) -> local Hugging Face model folder. Names may not contain ``:`` or ``/`` (they become
part of ``ft:`` model ids).

``grader_models`` maps the ``model`` names that score_model / label_model graders use (e.g.
``gpt-4o-2024-08-06``) to local judge models (a Hugging Face folder or ``.gguf`` file); the
allow-listed base models are judges under their own names too (:func:`judge_models`). A grader
naming anything else is refused: a client never names a server path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, ModelError
from ..graders.sandbox import SandboxConfig
from .ids import is_safe_name

MAX_UPLOAD_BYTES = 512 * 1024 * 1024  # OpenAI's Files API limit


@dataclass
class Settings:
    db: str
    data_dir: Path
    base_models: dict[str, Path] = field(default_factory=dict)
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    stale_after: float = 30.0
    """Seconds without a heartbeat after which a running job is taken over by another worker."""
    poll_interval: float = 0.5
    """How often a worker heartbeats, reads new metrics and checks for cancel / pause."""
    adapter: str = "lora"
    """Adapter type of every job (lora | dora | none)."""
    train_overrides: list[str] = field(default_factory=list)
    """Extra ``train.*`` / ``adapter.*`` settings (``KEY=VALUE``) applied to every job's config."""
    owner: str = "personal"
    """The owner field of ``ft:`` model ids (OpenAI puts the organisation slug there)."""
    grader_models: dict[str, Path] = field(default_factory=dict)
    """Judge models of score_model / label_model graders: grader ``model`` name -> local model."""
    tinker_models: dict[str, Path] = field(default_factory=dict)
    """Extra base models of the Tinker-compatible API (``/api/v1``) by name; names may take the
    ``org/model`` form the Tinker cookbook expects. The ``base_models`` are Tinker base models
    under their own names too (:func:`tinker_models`)."""
    grader_sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    """Isolation and limits of python graders (``graders/run`` and the create-time check)."""
    threads: int | None = None
    """Compute threads of this process's share of the cores: a worker's training runs, or a
    server's inference (``tunesmith.threads.service_split`` decides when None)."""

    @property
    def files_dir(self) -> Path:
        return Path(self.data_dir) / "files"

    @property
    def runs_dir(self) -> Path:
        return Path(self.data_dir) / "runs"

    def run_dir(self, job_id: str) -> Path:
        return self.runs_dir / job_id


def parse_base_models(items: list[str]) -> dict[str, Path]:
    """``NAME=PATH`` pairs (or a bare PATH, named by its folder) -> allow-list."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name, item
        if not is_safe_name(name):
            raise ConfigError(
                f"--base-model {item!r}: the name may hold only letters, digits, '.', '_' "
                "and '-' (it becomes part of ft: model ids)"
            )
        out[name] = local_model("--base-model", item, path)
    return out


def local_model(option: str, item: str, path: str) -> Path:
    """``path`` resolved, once checked to be a Hugging Face model folder or a GGUF file (any file
    is read as GGUF, recognised by its content, and dequantised into the cache now, once);
    ConfigError naming ``option`` and ``item`` otherwise."""
    folder = Path(path).expanduser().resolve()
    if folder.is_file():
        from ..models.gguf_import import resolve_model_path

        try:
            resolve_model_path(folder)
        except ModelError as exc:
            raise ConfigError(f"{option} {item!r}: {exc}") from None
    elif not (folder / "config.json").is_file():
        raise ConfigError(
            f"{option} {item!r}: {folder} is not a Hugging Face model folder (no config.json) or a GGUF file"
        )
    return folder


def judge_models(settings: Settings) -> dict[str, str]:
    """Grader ``model`` name -> local judge path: the base models under their names, then the
    ``grader_models`` (which win on a clash)."""
    out = {name: str(path) for name, path in settings.base_models.items()}
    out.update({name: str(path) for name, path in settings.grader_models.items()})
    return out


def tinker_models(settings: Settings) -> dict[str, Path]:
    """Base models of the Tinker-compatible API: the ``base_models``, then ``tinker_models``."""
    return {**settings.base_models, **settings.tinker_models}


def parse_tinker_models(items: list[str]) -> dict[str, Path]:
    """``--tinker-model NAME=PATH`` pairs -> ``{name: local model}``; NAME is letters, digits,
    ``._-`` with at most one ``/`` (``HuggingFaceTB/SmolLM2-135M-Instruct``)."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        parts = name.split("/")
        if not sep or len(parts) > 2 or not all(is_safe_name(p) for p in parts):
            raise ConfigError(
                f"--tinker-model {item!r}: expected NAME=PATH, NAME of letters, digits, '.', '_', '-' "
                "and at most one '/' (e.g. HuggingFaceTB/SmolLM2-135M-Instruct=models/smollm2.gguf)"
            )
        out[name] = local_model("--tinker-model", item, path)
    return out


def parse_grader_models(items: list[str]) -> dict[str, Path]:
    """``--grader-model NAME=PATH`` pairs -> ``{grader model name: local model}``
    (:func:`local_model`)."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(
                f"--grader-model {item!r}: expected NAME=PATH (NAME as graders give it "
                "in 'model', e.g. gpt-4o-2024-08-06)"
            )
        out[name.strip()] = local_model("--grader-model", item, path)
    return out
