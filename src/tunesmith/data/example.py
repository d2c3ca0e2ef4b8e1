"""The normalised training example every reader produces and every renderer consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ExampleKind = Literal["chat", "completion", "text"]


@dataclass
class Example:
    """One training example, independent of the file format it came from.

    - ``kind == "chat"``: ``messages`` is an OpenAI-style list of dicts with ``role`` in
      {system, user, assistant, tool} and ``content`` (str, or None for an assistant turn that
      only has ``tool_calls``); an optional ``weight`` (0 or 1) on assistant messages says whether
      that turn is trained. ``tools`` holds the optional OpenAI tool definitions.
    - ``kind == "completion"``: plain-string ``prompt`` and ``completion``, rendered without a chat
      template (prompt untrained, completion + EOS trained).
    - ``kind == "text"``: raw ``text`` for continued pretraining (all tokens trained).

    ``source`` is ``"path:line"`` (1-based) so later errors can name the place.
    ``extra`` keeps fields the format does not consume (e.g. reference answers for evaluation).
    """

    kind: ExampleKind
    source: str
    messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    prompt: str | None = None
    completion: str | None = None
    text: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
