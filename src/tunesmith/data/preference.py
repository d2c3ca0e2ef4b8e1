"""Preference data: read pairs (DPO, reward models) and unpaired examples (KTO), render them.

Accepted rows (see DESIGN.md "Data formats"):

- OpenAI preference: ``{"input": {"messages": [...], "tools"?: [...]}, "preferred_output":
  [{assistant}], "non_preferred_output": [{assistant}]}``;
- pairs: ``{"prompt", "chosen", "rejected"}`` — strings (rendered as raw text, like SFT's
  prompt/completion) or message lists (chat-templated). A string answer after a message-list
  prompt is an assistant message; a string prompt before message-list answers a user message.
  Without ``prompt``, ``chosen`` and ``rejected`` are full conversations whose longest common
  message prefix is the prompt. An optional numeric ``margin`` is used by reward models;
- KTO: ``{"prompt", "completion", "label": true|false}`` (strings or message lists). Pair
  files are accepted for KTO too (chosen -> desirable, rejected -> undesirable).

A rendered pair is a :class:`PairItem`: the prompt's token ids once and the two answers'
continuations. In a chat, an answer's ids are the template's text after the prompt rendered
with the generation prompt (exactly what a model continues at inference), trailing whitespace
after the end-of-turn marker dropped. The template must be prefix-preserving on the example
(checked; otherwise the error names the template and the row).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ..config.registry import METHODS, suggest_method
from ..errors import DataError
from ..models.template import render_chat
from .formats import (
    FORMAT_LABELS,
    KTO,
    OPENAI_PREFERENCE,
    PREFERENCE_PAIRS,
    Where,
    _describe,
    check_messages,
    iter_format_rows,
)

log = logging.getLogger("tunesmith")


@dataclass
class PairExample:
    """One preference pair; ``prompt`` and answers are strings (raw) or message lists (chat)."""

    source: str
    prompt: Any
    chosen: Any
    rejected: Any
    tools: list | None = None
    margin: float = 0.0


@dataclass
class UnpairedExample:
    """One KTO example: a prompt, a completion and whether the completion is desirable."""

    source: str
    prompt: Any
    completion: Any
    label: bool
    tools: list | None = None


@dataclass
class PairItem:
    """A rendered row ``[prompt | first | second]`` (token ids).

    DPO / reward: ``first`` is the chosen answer, ``second`` the rejected one. KTO: ``first``
    is the example's completion and ``second`` a *mismatched* completion (another example's)
    used for the KL reference point. ``ref`` holds the reference model's summed log-probs of
    the two answers once precomputed.
    """

    prompt_ids: list[int]
    first_ids: list[int]
    second_ids: list[int]
    source: str
    margin: float = 0.0
    label: bool = True
    ref: tuple[float, float] | None = None
    truncated: bool = field(default=False, repr=False)

    @property
    def n_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.first_ids) + len(self.second_ids)


# ---- reading ------------------------------------------------------------------------------


def _answer(value: Any, field_name: str, at: Where, prompt_is_chat: bool):
    """A string answer or a list of assistant messages (validated)."""
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}] if prompt_is_chat else value
    messages = check_messages(value, field_name, at)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            raise at.error(
                f"answer messages must have role 'assistant', got '{m['role']}'", f"{field_name}[{i}].role"
            )
    return messages


def _prompt(value: Any, field_name: str, at: Where, answers_are_chat: bool):
    if isinstance(value, str):
        return [{"role": "user", "content": value}] if answers_are_chat else value
    return check_messages(value, field_name, at)


def _split_implicit_prompt(chosen: list, rejected: list, at: Where):
    """``chosen`` / ``rejected`` full conversations -> (prompt, chosen tail, rejected tail)."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    while n > 0 and chosen[n - 1]["role"] == "assistant":
        n -= 1  # the answers start after the last shared non-assistant turn
    if n == 0:
        raise at.error(
            "without a 'prompt', chosen and rejected must be conversations that share "
            "their opening turns (the prompt)",
            "prompt",
        )
    for key, tail in (("chosen", chosen[n:]), ("rejected", rejected[n:])):
        if not tail or any(m["role"] != "assistant" for m in tail):
            raise at.error("after the shared prompt, the answer must be assistant messages", key)
    return chosen[:n], chosen[n:], rejected[n:]


def pair_from_row(row: dict, file_format: str, at: Where) -> PairExample:
    margin = row.get("margin", 0.0)
    if margin is None:
        margin = 0.0
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise at.error(f"margin must be a number, got {_describe(margin)}", "margin")
    if file_format == OPENAI_PREFERENCE:
        inp = row["input"]
        if not isinstance(inp, dict) or "messages" not in inp:
            raise at.error("input must be an object with 'messages'", "input")
        prompt = check_messages(inp["messages"], "input.messages", at)
        tools = inp.get("tools")
        chosen = _answer(row["preferred_output"], "preferred_output", at, True)
        rejected = _answer(row["non_preferred_output"], "non_preferred_output", at, True)
        return PairExample(at.source, prompt, chosen, rejected, tools, float(margin))
    chosen, rejected = row["chosen"], row["rejected"]
    for key, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, (str, list)):
            raise at.error(f"must be a string or an array of messages, got {_describe(value)}", key)
    if row.get("prompt") is None:
        if isinstance(chosen, str) or isinstance(rejected, str):
            raise at.error("'prompt' is missing (string answers need a prompt)", "prompt")
        prompt, chosen, rejected = _split_implicit_prompt(
            check_messages(chosen, "chosen", at), check_messages(rejected, "rejected", at), at
        )
        return PairExample(at.source, prompt, chosen, rejected, row.get("tools"), float(margin))
    chat = not (isinstance(row["prompt"], str) and isinstance(chosen, str) and isinstance(rejected, str))
    prompt = _prompt(row["prompt"], "prompt", at, chat)
    return PairExample(
        at.source,
        prompt,
        _answer(chosen, "chosen", at, chat),
        _answer(rejected, "rejected", at, chat),
        row.get("tools"),
        float(margin),
    )


def _unpaired_from_row(row: dict, at: Where) -> UnpairedExample:
    label = row["label"]
    if not isinstance(label, bool):
        raise at.error(f"label must be true or false, got {_describe(label)}", "label")
    completion = row["completion"]
    if not isinstance(completion, (str, list)):
        raise at.error(f"must be a string or an array of messages, got {_describe(completion)}", "completion")
    chat = not (isinstance(row["prompt"], str) and isinstance(completion, str))
    prompt = _prompt(row["prompt"], "prompt", at, chat)
    return UnpairedExample(
        at.source, prompt, _answer(completion, "completion", at, chat), label, row.get("tools")
    )


def _wrong_format(file_format: str, method: str, at: Where) -> DataError:
    return at.error(
        f"this file looks like {FORMAT_LABELS[file_format]} data, judging by its first "
        f"row; {METHODS[method].needs}; train it with method {suggest_method(file_format)}"
    )


def load_pairs(paths: list[str]) -> list[PairExample]:
    """Every preference pair in ``paths`` (OpenAI preference or prompt/chosen/rejected rows)."""
    out = []
    for path in paths:
        for number, file_format, row in iter_format_rows(path):
            at = Where(str(path), number)
            if file_format not in METHODS["dpo"].formats:
                raise _wrong_format(file_format, "dpo", at)
            out.append(pair_from_row(row, file_format, at))
    return out


def load_unpaired(paths: list[str]) -> list[UnpairedExample]:
    """KTO examples in ``paths``; pair rows count as one desirable and one undesirable example."""
    out = []
    for path in paths:
        for number, file_format, row in iter_format_rows(path):
            at = Where(str(path), number)
            if file_format == KTO:
                out.append(_unpaired_from_row(row, at))
            elif file_format in (OPENAI_PREFERENCE, PREFERENCE_PAIRS):
                pair = pair_from_row(row, file_format, at)
                out.append(UnpairedExample(pair.source, pair.prompt, pair.chosen, True, pair.tools))
                out.append(UnpairedExample(pair.source, pair.prompt, pair.rejected, False, pair.tools))
            else:
                raise _wrong_format(file_format, "kto", at)
    return out


# ---- rendering ----------------------------------------------------------------------------

_TEMPLATE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id", "function_call")


def _template(tokenizer, messages, tools, generation: bool, name: str) -> str:
    messages = [{k: m[k] for k in _TEMPLATE_KEYS if k in m} for m in messages]
    return render_chat(
        tokenizer,
        messages,
        tools=tools,
        add_generation_prompt=generation,
        error=DataError,
        what=f"the chat template of {name}",
    )


def chat_texts(
    tokenizer, prompt: list, answers: list[list], tools=None, name: str = "the tokenizer"
) -> tuple[str, list[str]]:
    """(prompt text with the generation prompt, each answer's continuation text).

    Raises DataError (field ``answer[k]``) when the template is not prefix-preserving here.
    """
    prompt_text = _template(tokenizer, prompt, tools, True, name)
    conts = []
    for k, answer in enumerate(answers):
        full = _template(tokenizer, list(prompt) + list(answer), tools, False, name)
        if not full.startswith(prompt_text):
            raise DataError(
                f"the chat template of {name} is not prefix-preserving for this "
                "example (the prompt rendered with the generation prompt is not a "
                "prefix of prompt + answer), so the answer's tokens cannot be "
                "separated safely; use another template (model.chat_template)",
                field=f"answer[{k}]",
            )
        cont = full[len(prompt_text) :]
        conts.append(cont.rstrip(" \n") or cont)
    return prompt_text, conts


class PairRenderer:
    """Renders pair / unpaired examples into token ids for one tokenizer."""

    def __init__(self, tokenizer, max_length: int, template_name: str | None = None):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.name = template_name or getattr(tokenizer, "name_or_path", "") or "the tokenizer"

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids

    def ids(self, prompt, answers: list, tools, source: str) -> tuple[list[int], list[list[int]]]:
        """Token ids of the prompt and of each answer (no truncation)."""
        tok = self.tokenizer
        try:
            if isinstance(prompt, str):
                bos = (
                    [tok.bos_token_id]
                    if tok.bos_token_id is not None and getattr(tok, "add_bos_token", False)
                    else []
                )
                eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
                return bos + self.encode(prompt), [self.encode(a) + eos for a in answers]
            prompt_text, conts = chat_texts(tok, prompt, answers, tools, self.name)
        except DataError as exc:
            path, _, line = source.rpartition(":")
            raise DataError(
                exc.bare_message, path=path, line=int(line) if line.isdigit() else None, field=exc.field
            ) from None
        return self.encode(prompt_text), [self.encode(c) for c in conts]

    def fit(self, prompt: list[int], first: list[int], second: list[int]):
        """Truncate so that prompt + each answer fits ``max_length``: the prompt keeps its last
        ``max_length // 2`` tokens when it must give way, answers are cut at the end."""
        limit = self.max_length
        truncated = len(prompt) + max(len(first), len(second)) > limit
        if truncated:
            if len(prompt) > limit // 2:
                prompt = prompt[-(limit // 2) :]
            first, second = first[: limit - len(prompt)], second[: limit - len(prompt)]
        return prompt, first, second, truncated

    def pair(self, ex: PairExample) -> PairItem:
        prompt, (chosen, rejected) = self.ids(ex.prompt, [ex.chosen, ex.rejected], ex.tools, ex.source)
        _check_nonempty(prompt, chosen, rejected, ex.source)
        prompt, chosen, rejected, cut = self.fit(prompt, chosen, rejected)
        return PairItem(prompt, chosen, rejected, ex.source, margin=ex.margin, truncated=cut)

    def unpaired(self, ex: UnpairedExample, kl_completion) -> PairItem:
        prompt, (completion, kl) = self.ids(ex.prompt, [ex.completion, kl_completion], ex.tools, ex.source)
        _check_nonempty(prompt, completion, kl, ex.source)
        prompt, completion, kl, cut = self.fit(prompt, completion, kl)
        return PairItem(prompt, completion, kl, ex.source, label=ex.label, truncated=cut)


def _check_nonempty(prompt, first, second, source):
    path, _, line = source.rpartition(":")
    line = int(line) if line.isdigit() else None
    if not prompt:
        raise DataError(
            "the prompt renders to no tokens; the first answer token needs a context to be predicted from",
            path=path,
            line=line,
            field="prompt",
        )
    if not first or not second:
        raise DataError("an answer renders to no tokens", path=path, line=line)


def render_pairs(renderer: PairRenderer, examples: list[PairExample]) -> tuple[list[PairItem], dict]:
    items = [renderer.pair(ex) for ex in examples]
    return items, _stats(items, identical=sum(i.first_ids == i.second_ids for i in items))


def render_unpaired(renderer: PairRenderer, examples: list[UnpairedExample]) -> tuple[list[PairItem], dict]:
    """Render KTO examples; example i's KL completion is example (i + 1) mod n's completion
    (a mismatched pair as in Ethayarajh et al. 2024, §4.1), fixed here so that it does not
    depend on batching."""
    n = len(examples)
    items = [
        renderer.unpaired(ex, _as_answer(examples[(i + 1) % n].completion, ex.prompt))
        for i, ex in enumerate(examples)
    ]
    stats = _stats(items)
    stats["desirable"] = sum(i.label for i in items)
    stats["undesirable"] = len(items) - stats["desirable"]
    return items, stats


def _as_answer(completion, prompt):
    """Another example's completion in the shape this example's prompt needs."""
    if isinstance(prompt, str) == isinstance(completion, str):
        return completion
    if isinstance(completion, str):
        return [{"role": "assistant", "content": completion}]
    return "".join(m.get("content") or "" for m in completion)


def _stats(items: list[PairItem], **extra) -> dict:
    return {
        "examples": len(items),
        "truncated": sum(i.truncated for i in items),
        "tokens": sum(i.n_tokens for i in items),
        "prompt_tokens": sum(len(i.prompt_ids) for i in items),
        "target_tokens": sum(len(i.first_ids) + len(i.second_ids) for i in items),
        **extra,
    }
