"""The report of ``tunesmith data check``: the problem codes (OpenAI's wording) and
:class:`CheckReport`, which counts problems and lists the first ``max_listed`` of each code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import formats as F

MIN_EXAMPLES = 10  # OpenAI's minimum (invalid_n_examples)

CODES: dict[str, str] = {
    # file level
    "invalid_n_examples": "fewer than 10 examples in the training file",
    "invalid_utf8": "a line is not valid UTF-8",
    "invalid_json": "a line cannot be parsed as JSON",
    "unreadable_file": "a non-JSONL file stopped parsing (reported once, at the failing row)",
    "format_method_mismatch": "the file's format does not suit --method",
    "format_mismatch": "a row has a different format from the first row",
    # row level (cookbook codes first)
    "data_type": "a row or message is not a JSON object",
    "missing_messages_list": "no non-empty 'messages' array",
    "message_missing_key": "a message has no 'role' or no 'content'",
    "message_unrecognized_key": "a message has a key outside the allowed set",
    "unrecognized_role": "a role other than system, user, assistant, tool (developer)",
    "missing_content": "content is null without tool_calls",
    "invalid_content": "content is not a string",
    "example_missing_assistant_message": "no assistant message to train on",
    "no_trained_messages": "every assistant message has weight 0",
    "invalid_weight": "weight other than 0 or 1",
    "weight_on_non_assistant": "weight on a non-assistant message",
    "assistant_only_key": "tool_calls / function_call / reasoning on a non-assistant message",
    "tool_message_missing_tool_call_id": "tool message without tool_call_id",
    "invalid_tool_calls": "tool_calls is not an array of {function: {name, arguments}}",
    "tool_call_arguments_not_string": "tool_calls[].function.arguments is not a string",
    "tool_call_arguments_invalid_json": "tool_calls[].function.arguments is not valid JSON",
    "invalid_tools": "tools is not an array of objects",
    "special_token_in_text": "a special token of the tokenizer appears literally in text",
    "invalid_unicode": "text holds a lone surrogate (an unpaired \\ud800-\\udfff escape)",
    "missing_key": "a required key of the format is missing (DPO: input / preferred_output …)",
    "invalid_preference_output": "a DPO output is not exactly one assistant message",
    "invalid_example": "a row the normaliser rejects (non-chat formats)",
    "template_error": "the chat template cannot render the example or derive its mask",
}
WARNING_CODES: dict[str, str] = {
    "empty_content": "a message's content is empty",
    "example_truncated": "longer than max_length; training removes tokens from the end",
    "no_trained_tokens": "no trained token (after truncation); training drops the example",
    "duplicate_examples": "exact or near-duplicate rows (see duplicates)",
    "train_eval_overlap": "rows of the eval file also in the training file",
}

# ---- the report ---------------------------------------------------------------------------


@dataclass
class CheckReport:
    """Result of :func:`check_file`. ``ok`` is True when there is no error (warnings allowed).

    ``errors`` / ``warnings``: dicts ``{code, line, message_index, message, param}`` (``line`` and
    ``message_index`` 1-based or None, ``param`` ``training_file`` or ``validation_file``), at
    most ``max_listed`` per code; ``error_counts`` / ``warning_counts`` hold the full counts.
    """

    path: str
    method: str
    format: str | None = None
    n_examples: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    error_counts: dict[str, int] = field(default_factory=dict)
    warning_counts: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    duplicates: dict[str, Any] = field(default_factory=dict)
    max_listed: int = 100

    @property
    def ok(self) -> bool:
        return not self.error_counts

    def add(
        self,
        code: str,
        line: int | None,
        message: str,
        message_index: int | None = None,
        param: str = "training_file",
    ) -> None:
        """Record a problem; its severity follows from the code (:data:`WARNING_CODES`)."""
        warning = code in WARNING_CODES
        counts = self.warning_counts if warning else self.error_counts
        counts[code] = counts.get(code, 0) + 1
        if counts[code] <= self.max_listed:
            (self.warnings if warning else self.errors).append(
                {
                    "code": code,
                    "line": line,
                    "message_index": message_index,
                    "message": message,
                    "param": param,
                }
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the whole report."""
        return {
            "path": self.path,
            "ok": self.ok,
            "method": self.method,
            "format": self.format,
            "n_examples": self.n_examples,
            "error_counts": self.error_counts,
            "warning_counts": self.warning_counts,
            "errors": self.errors,
            "warnings": self.warnings,
            "stats": self.stats,
            "duplicates": self.duplicates,
        }

    def job_error(self) -> dict[str, str] | None:
        """The OpenAI job ``error`` object for the first problem, or None when ok.

        ``invalid_n_examples`` keeps its code and message; every other problem becomes
        ``invalid_file_format`` with OpenAI's "The job failed due to a file format error …" text.
        """
        if self.ok:
            return None
        for err in self.errors:
            if err["code"] == "invalid_n_examples":
                return {"code": err["code"], "message": err["message"], "param": err["param"]}
        first = self.errors[0]
        which = "training" if first["param"] == "training_file" else "validation"
        return {
            "code": "invalid_file_format",
            "param": first["param"],
            "message": f"The job failed due to a file format error in the {which} file. " + first["message"],
        }


def where(line: int, message_index: int | None = None) -> str:
    text = f"Invalid file format. Example {line}"
    return text + (f", message {message_index}" if message_index else "")


def describe_value(value: Any) -> str:
    return F._describe(value)
