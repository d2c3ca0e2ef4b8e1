"""What the dashboard shows before a job starts (``POST /v1/dashboard/preflight``, owned by
:mod:`.routes_dashboard`): the findings of ``tunesmith data check`` for the job's files, the
hyperparameters with every ``"auto"`` resolved, and the ``tunesmith estimate`` of its run.

The request body is exactly a create-job body (``POST /v1/fine_tuning/jobs``), validated by the
same :func:`.spec.normalise_create` and the same model / file rules, so what the preflight accepts
the create accepts. The answer::

    {"files": {"report": <CheckReport.to_dict() with the worker's limits>,
               "pii": {"rows", "rows_with_findings", "total", "by_type", "findings": [...]}},
     "hyperparameters": {"requested": {...}, "resolved": {...}, "learning_rate": float,
                         "steps_per_epoch": int, "total_steps": int, "max_length": int},
     "estimate": {"memory": <MemoryEstimate.to_dict()> | None, "time": {...} | None,
                  "notes": [str]},
     "base_model": {"name", "format": "gguf" | "hf"}}

* ``files.report`` is what the worker's validation checks (:meth:`.worker.Worker.validate`:
  :func:`tunesmith.data.tools.check.check_file` for supervised / DPO, :mod:`.rft_data` for
  reinforcement) with the run's ``max_length``, but lists up to :data:`MAX_LISTED` problems of
  each code instead of the first one. Its ``path`` is the file id; any server path in a
  message becomes the file's public name (:func:`.redact.public_text`).
* ``files.pii`` is the scan of ``tunesmith data scrub`` (:func:`tunesmith.data.tools.scrub.scrub_value`)
  over every row of both files: where (line, field path, type, length), never the found text.
* ``estimate.memory`` is :func:`tunesmith.models.memory.estimate_memory` of the very run config
  the worker would write (:func:`.translate.run_config`), on the device this server sees;
  ``estimate.time`` is ``data check``'s token-based time estimate times the resolved epochs
  (the matmul rate is measured once per process on this server's machine, which may not be the
  worker's). Either is ``None`` with a note when it cannot be made: an estimate is advisory.

Reports are cached per (project, files, base model, method, limits): files are immutable once
uploaded, so a form that changes only hyperparameters does not re-read them; memory estimates
per run config.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from . import translate
from .objects import base_name
from .redact import public_text
from .spec import base_lr, resolve_method, steps_per_epoch

MAX_LISTED = 50  # problems listed per code (the counts are always complete)
MAX_PII_LISTED = 200
CHECK_METHODS = {"supervised": "sft", "dpo": "dpo"}  # job method type -> data check --method


class FileChecks:
    """A small LRU of preflight results (file reports, memory estimates), safe across the
    server's threads."""

    def __init__(self, size: int = 32):
        self.size, self._items, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, key: tuple, make) -> dict:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()  # outside the lock: a check reads whole files
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


def preflight(svc, proj: dict, body: Any, accept) -> dict:
    """The module docstring's answer for the create-job ``body`` of project ``proj``.
    ``accept(svc, proj, spec)`` is the create route's own check of a normalised body
    (:func:`.routes_jobs.accept_create`: 400s as the create answers them; returns the parent job
    row and step of a continued fine-tuning, else None). Blocking."""
    from .spec import normalise_create

    spec = normalise_create(body)
    parent = accept(svc, proj, spec)
    base = base_name(parent[0]) if parent else spec["model"]
    base_path = Path(svc.settings.base_models[base])
    method = spec["method"]
    key = (
        proj["id"],
        spec["training_file"],
        spec["validation_file"],
        base,
        method["type"],
        json.dumps(method.get("reinforcement", {}).get("grader"), sort_keys=True),
        translate.max_length(svc.settings),
        translate.max_new_tokens(svc.settings),
    )
    files = copy.deepcopy(svc.preflight_cache.get(key, lambda: check_files(svc, spec, base_path)))
    per_epoch = files["report"]["stats"].pop("estimate", None)  # time: reported under "estimate"
    n_examples = max(1, files["report"]["n_examples"])
    resolved = resolve_method(method, n_examples)
    h = resolved[resolved["type"]]["hyperparameters"]
    steps = steps_per_epoch(n_examples, h["batch_size"])
    hyper = {
        "requested": method[method["type"]]["hyperparameters"],
        "resolved": h,
        "learning_rate": base_lr(svc.settings.adapter) * h["learning_rate_multiplier"],
        "adapter": svc.settings.adapter,
        "steps_per_epoch": steps,
        "total_steps": steps * h["n_epochs"],
        "max_length": translate.max_length(svc.settings),
    }
    job = {
        "id": "ftjob-preflight",
        "model": spec["model"],
        "training_file": spec["training_file"],
        "validation_file": spec["validation_file"],
        "seed": spec["seed"] or 0,
        "n_examples": n_examples,
        "parent_job_id": parent[0]["id"] if parent else None,
        "parent_step": parent[1] if parent else None,
    }
    return {
        "files": files,
        "hyperparameters": hyper,
        "estimate": _estimate(svc, job, resolved, parent, per_epoch, h["n_epochs"]),
        "base_model": {"name": base, "format": "gguf" if base_path.is_file() else "hf"},
    }


def check_files(svc, spec: dict, base: Path) -> dict:
    """``files`` of the answer for the job ``spec`` on base model folder (or GGUF) ``base``."""
    from ..models.load import load_tokenizer

    with tempfile.TemporaryDirectory(prefix="tunesmith-preflight-") as tmp:
        # The checks choose their reader by suffix; blobs have none. Links, not copies.
        staged: dict[str, Path | None] = {}
        names: dict[Path, str] = {}
        for param, name in (("training_file", "train.jsonl"), ("validation_file", "valid.jsonl")):
            fid = spec[param]
            staged[param] = None
            if fid is not None:
                link = Path(tmp) / name
                link.symlink_to(svc.blobs.path(fid))
                staged[param], names[link] = link, f"the {param.replace('_', ' ')} {fid}"
        names.update({folder: f"model {n}" for n, folder in svc.settings.base_models.items()})
        tokenizer = load_tokenizer(base)
        report = _check(svc, spec, staged, tokenizer, base)
        report["path"] = spec["training_file"]
        for problem in report["errors"] + report["warnings"]:
            problem["message"] = public_text(problem["message"], names)
        pii = scan_pii([p for p in (staged["training_file"], staged["validation_file"]) if p])
        return {"report": report, "pii": pii}


def _check(svc, spec: dict, staged: dict, tokenizer, base: Path) -> dict:
    """The worker's validation of the staged files, every problem listed (up to MAX_LISTED)."""
    method = spec["method"]
    if method["type"] == "reinforcement":
        from ..graders import item_keys, parse_grader
        from .rft_data import check_rft_files

        grader = parse_grader(method["reinforcement"]["grader"], "method.reinforcement.grader")
        room = translate.max_length(svc.settings) - translate.max_new_tokens(svc.settings)
        check = check_rft_files(
            staged["training_file"],
            staged["validation_file"],
            required=item_keys(grader) - {"messages", "prompt"},
            tokenizer=tokenizer,
            room=room,
        )
        out = check.report.to_dict()
        out["format"] = "reinforcement prompts"  # messages without the answer, plus item keys
        out["stats"]["examples"] = check.report.n_examples
        out["stats"]["prompts_too_long"] = check.too_long
        out["stats"]["prompt_room_tokens"] = room
        return out
    from ..data.tools.check import check_file

    report = check_file(
        staged["training_file"],
        tokenizer=tokenizer,
        method=CHECK_METHODS[method["type"]],
        eval_path=staged["validation_file"],
        max_length=translate.max_length(svc.settings),
        max_listed=MAX_LISTED,
        model_dir=base,  # adds only stats["estimate"] (time per epoch); the checks are the worker's
        adapter=svc.settings.adapter,
        flop_rate=flop_rate(),
    )
    return report.to_dict()


@functools.cache
def flop_rate() -> float:
    """This machine's measured matmul rate, once per process (``data check`` measures per call)."""
    from ..data.tools.estimate import measure_flop_rate

    return measure_flop_rate()


def scan_pii(paths: list[Path]) -> dict:
    """Where ``data scrub`` would redact something in the files ``paths`` (train first): counts
    by type and the first :data:`MAX_PII_LISTED` findings ``{file, line, field, type, length}``."""
    from ..data.tools.check import iter_file
    from ..data.tools.pii_patterns import TYPES
    from ..data.tools.scrub import scrub_value
    from ..errors import DataError

    by_type: dict[str, int] = {}
    findings: list[dict] = []
    rows = with_findings = total = 0
    for index, path in enumerate(paths):
        which = "training_file" if index == 0 else "validation_file"
        with contextlib.suppress(DataError):  # an unreadable file is the check's to report
            for row in iter_file(path, None):  # JSONL: every line that parses, past broken ones
                if row.problem is not None:
                    continue
                rows += 1
                _, found = scrub_value(row.value)
                with_findings += bool(found)
                for f in found:
                    total += 1
                    by_type[f.kind] = by_type.get(f.kind, 0) + 1
                    if len(findings) < MAX_PII_LISTED:
                        findings.append({"file": which, **f.as_report(row.line)})
    return {
        "rows": rows,
        "rows_with_findings": with_findings,
        "total": total,
        "by_type": {k: by_type[k] for k in TYPES if k in by_type},
        "findings": findings,
    }


def _estimate(svc, job: dict, method: dict, parent, per_epoch: dict | None, epochs: int) -> dict:
    """``estimate`` of the answer: memory of the run config the worker would write, and time."""
    notes: list[str] = []
    memory = None
    try:
        from ..config.load import load_config
        from ..models.memory import estimate_memory

        cfg = translate.run_config(svc.settings, job, copy.deepcopy(method), parent[0] if parent else None)
        key = ("memory", json.dumps(cfg, sort_keys=True, default=str))  # one trace per distinct config
        memory = svc.preflight_cache.get(key, lambda: estimate_memory(load_config(cfg)).to_dict())
    except Exception as exc:  # noqa: BLE001 - an estimate is advisory; say why it is missing
        names = {folder: f"model {n}" for n, folder in svc.settings.base_models.items()}
        notes.append("memory estimate unavailable: " + public_text(str(exc), names))
    time = None
    if per_epoch and per_epoch.get("seconds_per_epoch") is not None:
        time = {
            "seconds_per_epoch": per_epoch["seconds_per_epoch"],
            "epochs": epochs,
            "seconds": per_epoch["seconds_per_epoch"] * epochs,
            "tokens_per_epoch": per_epoch["tokens_per_epoch"],
            "flops_per_token": per_epoch["flops_per_token"],
            "flop_rate": per_epoch["flop_rate"],
        }
        notes.append(
            "time: tokens x FLOPs per token / (0.5 x the matmul rate measured on the server's "
            "machine), good to about a factor of two"
        )
    elif method["type"] == "reinforcement":
        notes.append("time is not estimated for reinforcement jobs: sampling answers dominates it")
    return {"memory": memory, "time": time, "notes": notes}
