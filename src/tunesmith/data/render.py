"""Examples -> token ids + loss mask, through the tokenizer's own chat template.

The mask is derived without ``{% generation %}`` markers, so it works for any template:
for each assistant turn k we render ``messages[:k]`` with the generation prompt and
``messages[:k+1]`` without it; the characters the turn adds are its span. The template must be
*prefix-preserving* on the example (each partial rendering a prefix of the full one); where it is
not (templates that move the system prompt, drop earlier reasoning, ...) we raise, naming the
template and the example, rather than guess a mask.

Convention: ``loss_mask[i] == 1`` means token ``i`` is a *target* (predicted from position i-1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import DataError
from ..models.template import render_chat
from .example import Example

_TEMPLATE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id", "function_call")


@dataclass
class Rendered:
    """One tokenised example. ``input_ids`` and ``loss_mask`` have equal length."""

    input_ids: list[int]
    loss_mask: list[int]
    source: str
    truncated: bool = False

    @property
    def n_targets(self) -> int:
        # Token 0 has no predecessor, so it can never be a target.
        return sum(self.loss_mask[1:])


class Renderer:
    """Turns :class:`Example` objects into :class:`Rendered` ones for one tokenizer.

    ``train_on_all_tokens`` supervises every token; otherwise only assistant turns (with
    ``weight`` != 0) and their end-of-turn tokens, or the completion of prompt/completion
    examples. ``max_length`` truncates from the end (``Rendered.truncated`` records it).
    """

    def __init__(
        self,
        tokenizer,
        *,
        max_length: int,
        train_on_all_tokens: bool = False,
        template_name: str | None = None,
    ):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.train_on_all_tokens = train_on_all_tokens
        self.template_name = template_name or getattr(tokenizer, "name_or_path", "") or "chat template"

    def __call__(self, example: Example) -> Rendered:
        return self.render_many([example])[0]

    def render_many(self, examples: list[Example]) -> list[Rendered]:
        """Render a list of examples; chat texts are tokenised in one parallel batch."""
        chats = [(i, *self.assistant_spans(ex)) for i, ex in enumerate(examples) if ex.kind == "chat"]
        encodings = self.tokenizer.backend_tokenizer.encode_batch(
            [full for _, full, _ in chats], add_special_tokens=False
        )
        chat_parts = {
            i: (enc.ids, _mask_from_offsets(enc.offsets, spans))
            for (i, _, spans), enc in zip(chats, encodings)
        }
        out = []
        for i, example in enumerate(examples):
            if example.kind == "chat":
                ids, mask = chat_parts[i]
            elif example.kind == "completion":
                ids, mask = self._render_completion(example)
            else:
                ids, mask = self._render_text(example)
            if self.train_on_all_tokens:
                mask = [1] * len(ids)
            truncated = len(ids) > self.max_length
            if truncated:
                ids, mask = ids[: self.max_length], mask[: self.max_length]
            out.append(Rendered(list(ids), mask, example.source, truncated))
        return out

    # -- chat -------------------------------------------------------------------------------
    def _template(self, messages, tools, add_generation_prompt: bool) -> str:
        return render_chat(
            self.tokenizer,
            messages,
            tools=tools,
            add_generation_prompt=add_generation_prompt,
            error=DataError,
            what=f"the chat template of {self.template_name}",
        )

    def assistant_spans(self, example: Example) -> tuple[str, list[tuple[int, int]]]:
        """Full rendered text and the [start, end) character spans of trained assistant turns.

        For assistant turn k: ``before`` = messages[:k] with the generation prompt (exactly what
        the model sees at inference) must be a prefix of the full rendering; the turn's span runs
        from there to where ``after`` = messages[:k+1] stops agreeing with the full rendering
        (templates such as Phi-3 append an end-of-text marker only after the *last* message).
        The span must contain the turn's content, else the template rewrote the turn and we fail.
        """
        messages = [{k: m[k] for k in _TEMPLATE_KEYS if k in m} for m in example.messages]
        try:
            full = self._template(messages, example.tools, add_generation_prompt=False)
            spans = []
            for k, message in enumerate(example.messages):
                if message.get("role") != "assistant" or message.get("weight", 1) == 0:
                    continue
                span = self._turn_span(messages, example.tools, k, full)
                if span is not None:
                    spans.append(span)
        except DataError as exc:
            raise DataError(
                exc.bare_message, path=_path(example), line=_line(example), field=exc.field
            ) from None
        return full, spans

    def _turn_span(self, messages, tools, k: int, full: str) -> tuple[int, int] | None:
        before = self._template(messages[:k], tools, add_generation_prompt=True) if k else ""
        after = self._template(messages[: k + 1], tools, add_generation_prompt=False)
        start = len(before)
        end = _common_prefix_len(after, full)
        if end < len(after):
            # `after` and `full` diverge mid-way (e.g. Phi-3 adds <|endoftext|> after the last
            # message only); the shared characters may be the start of two different tokens
            # ("<|" of "<|endoftext|>" / "<|user|>"), so back off to a token boundary of `after`.
            offsets = self.tokenizer(after, add_special_tokens=False, return_offsets_mapping=True)[
                "offset_mapping"
            ]
            end = max([e for _, e in offsets if e <= end] or [0])
        content = messages[k].get("content")
        content = content.strip() if isinstance(content, str) else ""
        if not full.startswith(before) or end <= start or content not in full[start:end]:
            raise DataError(
                f"the chat template of {self.template_name} is not prefix-preserving for this "
                f"conversation (the prompt up to message {k} is not a prefix of the full rendering, "
                "or the turn is rewritten by later turns), so the assistant-only loss mask cannot "
                "be derived safely. Use a template that keeps earlier turns unchanged "
                "(model.chat_template) or set data.train_on_all_tokens: true.",
                field=f"messages[{k}]",
            )
        # Trailing whitespace after the end-of-turn marker is formatting between turns, not
        # something the model must emit.
        while end > start and full[end - 1] in " \n":
            end -= 1
        return (start, end) if end > start else None

    # -- completion / text --------------------------------------------------------------------
    def _bos(self) -> list[int]:
        tok = self.tokenizer
        if tok.bos_token_id is not None and getattr(tok, "add_bos_token", False):
            return [tok.bos_token_id]
        return []

    def _eos(self) -> list[int]:
        eos = self.tokenizer.eos_token_id
        return [eos] if eos is not None else []

    def _render_completion(self, example: Example) -> tuple[list[int], list[int]]:
        prompt = self._bos() + self.tokenizer.encode(example.prompt, add_special_tokens=False)
        completion = self.tokenizer.encode(example.completion, add_special_tokens=False) + self._eos()
        return prompt + completion, [0] * len(prompt) + [1] * len(completion)

    def _render_text(self, example: Example) -> tuple[list[int], list[int]]:
        ids = self._bos() + self.tokenizer.encode(example.text, add_special_tokens=False) + self._eos()
        return ids, [1] * len(ids)


def _mask_from_offsets(offsets, spans: list[tuple[int, int]]) -> list[int]:
    """1 for each token lying wholly inside one of the sorted character ``spans``.

    A token straddling a span edge carries template text the turn does not own, so it stays
    untrained. Tokens are visited in order and spans are sorted, so one pass suffices.
    """
    mask = [0] * len(offsets)
    j = 0
    for i, (tok_start, tok_end) in enumerate(offsets):
        while j < len(spans) and tok_start >= spans[j][1]:
            j += 1
        if j < len(spans) and spans[j][0] <= tok_start and tok_start < tok_end <= spans[j][1]:
            mask[i] = 1
    return mask


def _common_prefix_len(a: str, b: str) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # invariant: a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _path(example: Example) -> str:
    return example.source.rsplit(":", 1)[0]


def _line(example: Example) -> int | None:
    tail = example.source.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def render_all(renderer: Renderer, examples: list[Example]) -> tuple[list[Rendered], dict[str, Any]]:
    """Render every example; drop those left with no trained token. Returns (rendered, stats)."""
    out, dropped, truncated = [], [], 0
    for ex, r in zip(examples, renderer.render_many(examples)):
        truncated += r.truncated
        if r.n_targets == 0:
            dropped.append(ex.source)
            continue
        out.append(r)
    stats = {
        "examples": len(examples),
        "kept": len(out),
        "truncated": truncated,
        "dropped_no_targets": len(dropped),
        "dropped_sources": dropped[:5],
        "tokens": sum(len(r.input_ids) for r in out),
        "target_tokens": sum(r.n_targets for r in out),
    }
    return out, stats
