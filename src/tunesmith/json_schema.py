"""JSON-Schema validators for the evaluation scorers and the GRPO rewards (one place for the
draft choice, the schema check and the error a user sees)."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ConfigError


def require_jsonschema(what: str, extra: str) -> None:
    """ConfigError unless the optional ``jsonschema`` package is importable; ``what`` says which
    feature needs it, ``extra`` the tunesmith extra that installs it."""
    try:
        import jsonschema  # noqa: F401
    except ImportError:
        raise ConfigError(f"{what} needs the jsonschema package: pip install 'tunesmith[{extra}]'") from None


def schema_validator(schema: dict, where: str):
    """A ``jsonschema`` validator for ``schema``, of the draft its ``$schema`` names (the
    newest the package knows when absent). An invalid schema is a ConfigError that names
    ``where`` (the config field or example field it came from)."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"{where}: not a valid JSON schema: {exc.message}") from None
    return cls(schema)


def read_schema_file(path: str | Path, where: str):
    """The JSON document in ``path`` (a schema file named by the user); ConfigError naming
    ``where`` (the option or config field) when the file is missing or is not JSON."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{where}: file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{where}: {path} is not JSON: {exc}") from None
