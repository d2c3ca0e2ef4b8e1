"""User-facing error types.

Every error a user can cause (bad data, bad config, missing files) is raised as a
subclass of :class:`TunesmithError`; the CLI prints its message without a traceback.
"""

from __future__ import annotations


class TunesmithError(Exception):
    """Base class for errors caused by user input; the message is the whole story."""


class ConfigError(TunesmithError):
    """Invalid run configuration (unknown key, wrong type, bad value)."""


class DataError(TunesmithError):
    """Invalid training data.

    ``path`` is the file, ``line`` the 1-based line (JSONL) or row (CSV/Parquet/JSON array
    element) number, ``field`` the offending field in dotted form (``messages[2].role``).
    """

    def __init__(
        self, message: str, *, path: str | None = None, line: int | None = None, field: str | None = None
    ):
        self.path, self.line, self.field = path, line, field
        where = ""
        if path is not None:
            where = str(path)
            if line is not None:
                where += f", line {line}"
            if field:
                where += f", field '{field}'"
            where += ": "
        super().__init__(where + message)
        self.bare_message = message


class ModelError(TunesmithError):
    """A model or tokenizer that cannot be loaded or used as asked."""


class CheckpointError(TunesmithError):
    """A checkpoint that is missing, incomplete or corrupt."""
