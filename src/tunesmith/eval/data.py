"""Held-out files -> evaluation items: what to score likelihood on, what to prompt, what to expect.

Accepted files (the format is detected from the first row, see :mod:`tunesmith.data.formats`):

- SFT formats (OpenAI chat, ShareGPT, Alpaca, prompt/completion, text): likelihood of the
  supervised tokens, and — except for raw text — generation: the prompt is the conversation up to
  its last assistant turn, the reference is that turn (or the row's ``reference`` field);
- prompt-only rows ``{"prompt": ..., "reference"?: ..., "keywords"?: [...]}``: generation only;
- OpenAI chat rows with no assistant message (the reinforcement fine-tuning shape:
  ``{"messages": [system?, user], "answer": ...}``): generation only, the messages are the prompt;
- preference rows (OpenAI preference, prompt/chosen/rejected): pairwise accuracy.

Optional per-row fields used by the scorers: ``reference`` (str), ``keywords`` (list of str),
``regex`` (str), ``json_schema`` (object). Bad values raise :class:`DataError` naming the file,
line and field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..data.example import Example
from ..data.formats import (
    KTO,
    OPENAI_CHAT,
    OPENAI_PREFERENCE,
    PREFERENCE_PAIRS,
    PROMPT_ONLY,
    Where,
    check_messages,
    iter_format_rows,
    to_example,
)
from ..errors import DataError


@dataclass
class EvalItem:
    """One held-out example for likelihood and/or generation.

    ``example``: rendered for likelihood (None for prompt-only rows); ``prompt``: a message list
    (chat template) or a plain string (prompt/completion rows, no template), None for raw text;
    ``target``: ``reference``/``keywords``/``regex``/``json_schema`` and the row's other fields;
    ``row``: the row as written in the file (what an OpenAI grader sees as ``item``).
    """

    source: str
    example: Example | None
    prompt: list[dict] | str | None
    target: dict = field(default_factory=dict)
    row: dict = field(default_factory=dict)

    def grader_item(self) -> dict:
        """The ``item`` namespace of a grader: the row as written, plus ``reference`` (the
        reference answer, e.g. a chat row's last assistant turn) when the row has none."""
        item = dict(self.row)
        if "reference" not in item and self.target.get("reference") is not None:
            item["reference"] = self.target["reference"]
        return item


@dataclass
class PreferenceItem:
    """A preference pair: ``prompt`` messages and the ``chosen`` / ``rejected`` continuations."""

    source: str
    prompt: list[dict]
    chosen: list[dict]
    rejected: list[dict]


@dataclass
class EvalData:
    path: str
    file_format: str
    items: list[EvalItem] = field(default_factory=list)
    pairs: list[PreferenceItem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items) + len(self.pairs)


def load_eval_data(path: str, limit: int | None = None) -> EvalData:
    """Read a held-out file into :class:`EvalData` (at most ``limit`` rows)."""
    data: EvalData | None = None
    for number, file_format, row in iter_format_rows(path):
        if data is None:
            if file_format == KTO:
                raise DataError(
                    "KTO rows (prompt/completion/label) have no pairs to compare; "
                    "evaluate them as prompt/completion data without 'label', or use "
                    "preference pairs",
                    path=str(path),
                    line=number,
                )
            data = EvalData(str(path), file_format)
        at = Where(str(path), number)
        if file_format in (OPENAI_PREFERENCE, PREFERENCE_PAIRS):
            data.pairs.append(preference_item(row, file_format, at))
        else:
            if file_format == PROMPT_ONLY:
                item = prompt_only_item(row, at)
            elif file_format == OPENAI_CHAT and _prompt_only_chat(row):
                item = prompt_only_item({**row, "prompt": row["messages"]}, at, "messages")
            else:
                item = sft_item(to_example(row, file_format, at.path, number), at)
            item.row = row
            data.items.append(item)
        if limit is not None and len(data) >= limit:
            break
    if data is None:
        raise DataError("the file holds no examples", path=str(path))
    return data


def _target(fields: dict[str, Any], at: Where, reference: str | None) -> dict:
    """The scorer inputs of a row, with types checked."""
    target = dict(fields)
    ref = fields.get("reference", reference)
    if ref is not None and not isinstance(ref, str):
        raise at.error("must be a string (the reference answer)", "reference")
    target["reference"] = ref
    keywords = fields.get("keywords")
    if keywords is not None and (
        not isinstance(keywords, list) or not all(isinstance(k, str) and k for k in keywords)
    ):
        raise at.error("must be a list of non-empty strings", "keywords")
    regex = fields.get("regex")
    if regex is not None:
        import re

        if not isinstance(regex, str):
            raise at.error("must be a string (a Python regular expression)", "regex")
        try:
            re.compile(regex)
        except re.error as exc:
            raise at.error(f"is not a valid regular expression: {exc}", "regex") from None
    schema = fields.get("json_schema")
    if schema is not None and not isinstance(schema, (dict, bool)):
        raise at.error("must be a JSON Schema object", "json_schema")
    target["source"] = at.source
    return target


def sft_item(example: Example, at: Where) -> EvalItem:
    """Prompt = the conversation before its last assistant turn; reference = that turn."""
    if example.kind == "text":
        return EvalItem(example.source, example, None, _target(example.extra, at, None))
    if example.kind == "completion":
        return EvalItem(
            example.source, example, example.prompt, _target(example.extra, at, example.completion)
        )
    last = max(i for i, m in enumerate(example.messages) if m["role"] == "assistant")
    prompt = [{k: v for k, v in m.items() if k != "weight"} for m in example.messages[:last]]
    reference = example.messages[last].get("content")
    return EvalItem(example.source, example, prompt or None, _target(example.extra, at, reference))


def _prompt_only_chat(row: dict) -> bool:
    messages = row.get("messages")
    return (
        isinstance(messages, list)
        and bool(messages)
        and all(isinstance(m, dict) and m.get("role") != "assistant" for m in messages)
    )


def prompt_only_item(row: dict, at: Where, key: str = "prompt") -> EvalItem:
    prompt = row["prompt"]
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = check_messages(prompt, key, at)
    fields = {k: v for k, v in row.items() if k not in ("prompt", key)}
    return EvalItem(at.source, None, messages, _target(fields, at, None))


def _as_messages(value: Any, field: str, at: Where, role: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return check_messages(value, field, at)


def preference_item(row: dict, file_format: str, at: Where) -> PreferenceItem:
    """Normalise an OpenAI preference row or a prompt/chosen/rejected row (strings or messages;
    without ``prompt``, chosen and rejected are whole conversations that share all but their
    last message)."""
    if file_format == OPENAI_PREFERENCE:
        source = row["input"]
        if not isinstance(source, dict) or "messages" not in source:
            raise at.error("must be an object with 'messages'", "input")
        prompt = check_messages(source["messages"], "input.messages", at)
        chosen = _as_messages(row["preferred_output"], "preferred_output", at, "assistant")
        rejected = _as_messages(row["non_preferred_output"], "non_preferred_output", at, "assistant")
    elif row.get("prompt") is not None:
        prompt = _as_messages(row["prompt"], "prompt", at, "user")
        chosen = _as_messages(row["chosen"], "chosen", at, "assistant")
        rejected = _as_messages(row["rejected"], "rejected", at, "assistant")
    else:
        full_chosen = _as_messages(row["chosen"], "chosen", at, "assistant")
        full_rejected = _as_messages(row["rejected"], "rejected", at, "assistant")
        if len(full_chosen) < 2 or full_chosen[:-1] != full_rejected[:-1]:
            raise at.error(
                "without 'prompt', chosen and rejected must be conversations that "
                "differ only in their last message",
                "rejected",
            )
        prompt, chosen, rejected = full_chosen[:-1], full_chosen[-1:], full_rejected[-1:]
    for name, turns in (("chosen", chosen), ("rejected", rejected)):
        if not any(m["role"] == "assistant" for m in turns):
            raise at.error("needs an assistant message", name)
    return PreferenceItem(at.source, prompt, chosen, rejected)


def pair_examples(pair: PreferenceItem) -> tuple[Example, Example]:
    """The chosen and rejected conversations as chat Examples whose only trained tokens are the
    continuation (prompt assistant turns get weight 0), so the summed token log-probability of
    a rendering is ``log p(continuation | prompt)``."""
    prompt = [dict(m, weight=0) if m["role"] == "assistant" else dict(m) for m in pair.prompt]
    return (
        Example(kind="chat", source=pair.source, messages=prompt + [dict(m) for m in pair.chosen]),
        Example(kind="chat", source=pair.source, messages=prompt + [dict(m) for m in pair.rejected]),
    )
