"""Graders given by their users: an inline object or a JSON / YAML file, and what they read.

One reader for the three users (the jobs API, GRPO rewards, ``tunesmith eval --grader``):

* :func:`read_grader` — a grader object (a dict), or a path to a ``.json`` / ``.yaml`` / ``.yml``
  file holding either a grader object or ``{"grader": {…}, "name"?: …}`` (the shape of a
  ``graders/run`` or ``graders/validate`` request body, so one can be saved and reused);
* :func:`item_keys` — the top-level ``item`` fields a grader's templates name, so a data file
  can be checked line by line before any model is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import jsontext
from . import template
from .spec import (
    Grader,
    GraderError,
    LabelModel,
    Multi,
    ScoreModel,
    StringCheck,
    TextSimilarity,
    parse_grader,
)


def read_grader(value: Any, path: str = "grader") -> tuple[Grader, str]:
    """``(grader, name)`` from an inline object or a file path. ``name`` is the wrapper's
    ``name`` when the file holds ``{"grader": …, "name": …}``, else the grader's own ``name``.
    Every problem is a GraderError whose path is ``path`` (``path (file.json)`` plus the field
    inside the grader for a file)."""
    if isinstance(value, (str, Path)):
        file = Path(value)
        obj = _read_file(file, path)
        path = f"{path} ({file})"
    else:
        obj = value
    name = None
    if isinstance(obj, dict) and "grader" in obj and "type" not in obj:
        extra = sorted(set(obj) - {"grader", "name"})
        if extra:
            raise GraderError(f"{path}.{extra[0]}", "unknown field beside 'grader'; allowed: grader, name")
        name = obj.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise GraderError(f"{path}.name", "must be a non-empty string")
        obj = obj["grader"]
    spec = parse_grader(obj, path)
    return spec, name or spec.name


def _read_file(file: Path, path: str) -> Any:
    if not file.is_file():
        raise GraderError(path, f"grader file not found: {file}")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GraderError(path, f"cannot read {file}: {exc}") from None
    try:
        if file.suffix.lower() == ".json":
            return jsontext.loads(text)
        if file.suffix.lower() in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the file's problem
        raise GraderError(path, f"{file} is not valid {file.suffix[1:].upper()}: {exc}") from None
    raise GraderError(path, f"{file}: a grader file must be .json, .yaml or .yml")


def item_keys(spec: Grader) -> set[str]:
    """The top-level ``item`` keys that ``spec``'s templates read (``{{item.answer.text}}`` ->
    ``answer``). A python grader's code may read others; those cannot be known in advance."""
    texts: list[str] = []
    graders = list(spec.graders.values()) if isinstance(spec, Multi) else [spec]
    for g in graders:
        if isinstance(g, (StringCheck, TextSimilarity)):
            texts += [g.input, g.reference]
        elif isinstance(g, (ScoreModel, LabelModel)):
            texts += [
                part.get(key, "")
                for message in g.input
                for part in message.content
                for key in ("text", "image_url")
            ]
    keys = set()
    for text in texts:
        for variable in template.variables(text):
            if variable.namespace == "item" and isinstance(variable.steps[0], str):
                keys.add(variable.steps[0])
    return keys
