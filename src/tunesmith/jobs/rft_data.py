"""Reinforcement (RFT) data files: OpenAI's rows checked line by line, then rewritten as the
prompt-only rows GRPO reads.

An RFT row is ``{"messages": [...], <any other keys>}``: the prompt turns without the final
assistant answer (the model writes it), and extra keys the grader reads as ``{{item.<key>}}``
(docs: ../shared spec §2.4). Checks, each a problem naming the 1-based example (line) in
OpenAI's wording (``Invalid file format. Example 3 is missing key 'answer' …``), reported like
every other file problem of a job (:meth:`tunesmith.data.tools.check_report.CheckReport.job_error`:
``invalid_file_format``, or ``invalid_n_examples`` for fewer than 10 training examples):

* the line parses as a JSON object, with a non-empty ``messages`` array of OpenAI chat messages
  (the chat rules of ``tunesmith data check``: roles, string content, no special tokens) that
  does not end with an assistant message;
* every top-level ``item`` key the grader's templates name is present and not null;
* no ``prompt`` key (GRPO rows carry the prompt there; on this server ``{{item.prompt}}`` is the
  prompt messages) and no ``tools`` (tool calling is not trained here).

A prompt longer than ``max_length - max_new_tokens`` tokens (rendered with the base model's chat
template) would be dropped by GRPO: those are counted (a ``warn`` event), and a training file in
which no prompt fits is ``invalid_training_file``. :func:`write_prompts` writes the checked rows
as ``{"prompt": messages, <other keys>}`` next to the staged file (``train.prompts.jsonl``), so
the grader's ``{{item.<key>}}`` and ``{{item.messages}}`` read what they read at OpenAI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# data.tools.check's row reader and message rules are reused as they are (same wording, same codes as
# every other job file); they are module-private there, hence the underscores.
from ..data.tools.check import iter_file
from ..data.tools.check_report import CheckReport, describe_value, where
from ..data.tools.check_rules import RowRules, special_token_pattern

MIN_EXAMPLES = 10
RESERVED = {
    "prompt": "this server carries the prompt under 'prompt' (the prompt is 'messages'); rename the key",
    "tools": "tool calling is not trained by this server",
}


def prompts_path(staged: Path) -> Path:
    """Where the GRPO rows of a staged file go: ``data/train.jsonl`` -> ``data/train.prompts.jsonl``."""
    return staged.with_name(staged.stem + ".prompts.jsonl")


@dataclass
class RftCheck:
    """The files' report (errors as for any job file), the number of prompts too long to train
    on, and the first such example's line."""

    report: CheckReport
    too_long: int = 0
    fitting: int = 0
    first_too_long: int | None = None


def check_rft_files(
    train: Path, valid: Path | None, *, required: set[str], tokenizer: Any, room: int
) -> RftCheck:
    """Check the training (and validation) file; never raises for bad content (module doc).
    ``required``: the item keys the grader reads; ``room``: prompt tokens GRPO keeps."""
    check = RftCheck(CheckReport(str(train), "grpo", max_listed=1))
    special = special_token_pattern(tokenizer) if tokenizer is not None else None
    for path, param in ((train, "training_file"), (valid, "validation_file")):
        if path is None:
            continue
        n = 0
        for row in iter_file(path, None):
            n += 1
            rules = RowRules(check.report, param, special)
            if row.problem is not None:
                check.report.add(row.problem[0], row.line, row.problem[1], None, param)
            elif _row_ok(rules, row.value, row.line, required) and param == "training_file":
                _count_length(check, row.value["messages"], row.line, tokenizer, room)
        if param == "training_file":
            check.report.n_examples = n
            if n < MIN_EXAMPLES:
                check.report.add(
                    "invalid_n_examples",
                    None,
                    f"Training file has {n} example(s), but must have at least {MIN_EXAMPLES} examples",
                )
    return check


def _row_ok(rules: RowRules, value: Any, line: int, required: set[str]) -> bool:
    """The checks of one parsed row; True when it has no problem."""
    if not isinstance(value, dict):
        rules.add("data_type", line, f"{where(line)} is not a JSON object (got {describe_value(value)})")
        return False
    if value.get("messages") is None:
        rules.add("missing_key", line, f"{where(line)} is missing key 'messages'.")
        return False
    rules.messages(value["messages"], line, need_assistant=False)
    messages = value["messages"]
    if not rules.row_errors and messages[-1].get("role") == "assistant":
        rules.add(
            "invalid_example",
            line,
            f"{where(line)} ends with an assistant message; a reinforcement "
            "example holds the prompt only (the model writes the answer the grader scores)",
        )
    for key, why in RESERVED.items():
        if value.get(key) not in (None, []):
            rules.add("invalid_example", line, f"{where(line)} has the key '{key}': {why}")
    for key in sorted(required):
        if value.get(key) is None:
            rules.add(
                "missing_key",
                line,
                f"{where(line)} is missing key '{key}', which the grader reads ({{{{item.{key}}}}}).",
            )
    return not rules.row_errors


def _count_length(check: RftCheck, messages: list, line: int, tokenizer: Any, room: int) -> None:
    if tokenizer is None:
        check.fitting += 1
        return
    from ..models.generate import prompt_token_ids

    try:
        n = len(prompt_token_ids(tokenizer, messages))
    except Exception as exc:  # noqa: BLE001 - a template's raise_exception() and friends
        check.report.add(
            "invalid_example",
            line,
            f"{where(line)}: the model's chat template rejected these messages: {str(exc)[:200]}",
        )
        return
    if n > room:
        check.too_long += 1
        check.first_too_long = check.first_too_long or line
    else:
        check.fitting += 1


def write_prompts(staged: Path) -> Path:
    """Rewrite a checked RFT file as GRPO prompt-only rows (module doc); returns the new path."""
    out = prompts_path(staged)
    tmp = out.with_name(out.name + ".tmp")
    with staged.open("r", encoding="utf-8-sig") as src, tmp.open("w", encoding="utf-8") as dst:
        for line in src:
            if not line.strip():
                continue
            row = json.loads(line)
            messages = row.pop("messages")
            row.pop("tools", None)
            dst.write(json.dumps({"prompt": messages, **row}, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return out
