"""Chat templates by name (``model.chat_template: llama3``), shipped as package data.

A base model's tokenizer has no chat template; naming one of these gives it the chat format of a
model family, as Axolotl's and LLaMA-Factory's template names do. Every template here is
prefix-preserving (each turn renders the same however the conversation continues), so the
assistant-only loss mask can be derived from it (data/render.py); tests/unit/data/
test_render_masks.py checks each one's masks. The files are in ``templates/`` (SOURCES.md there
says where each format comes from). Torch-free: config validation reads :data:`NAMES`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError

_FOLDER = Path(__file__).with_name("templates")


@dataclass(frozen=True)
class NamedTemplate:
    """One shipped template: its ``name``, the ``markers`` it writes that must each be one token
    of the tokenizer (else the model could never learn to emit its end-of-turn marker), and the
    model families whose format it is."""

    name: str
    markers: tuple[str, ...]
    families: str

    @property
    def path(self) -> Path:
        return _FOLDER / f"{self.name}.jinja"

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")


TEMPLATES = {
    t.name: t
    for t in (
        NamedTemplate("chatml", ("<|im_start|>", "<|im_end|>"), "ChatML: SmolLM2, Hermes, Qwen base models"),
        NamedTemplate("qwen", ("<|im_start|>", "<|im_end|>"), "Qwen2.5 / Qwen3 (ChatML with tools)"),
        NamedTemplate(
            "llama3", ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), "Llama 3, 3.1, 3.2, 3.3"
        ),
        NamedTemplate("mistral", ("[INST]", "[/INST]"), "Mistral 7B v0.3, Mixtral, Mistral Nemo"),
        NamedTemplate("gemma", ("<start_of_turn>", "<end_of_turn>"), "Gemma, Gemma 2, Gemma 3"),
        NamedTemplate("phi3", ("<|user|>", "<|assistant|>", "<|end|>"), "Phi-3, Phi-3.5"),
    )
}
NAMES = tuple(sorted(TEMPLATES))


def is_template_name(value: str) -> bool:
    """Whether ``model.chat_template: value`` is meant as a name rather than a file path: no
    folder separator and no file suffix (``chatml``, not ``chatml.jinja`` or ``./chatml``)."""
    return "/" not in value and "\\" not in value and not Path(value).suffix


def unknown_name_message(value: str) -> str:
    """``value`` is neither a shipped name nor a file: say so, with the closest name and the list."""
    close = difflib.get_close_matches(value, NAMES, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return (
        f"'model.chat_template' = {value!r} is not a named chat template ({', '.join(NAMES)}) "
        f"nor a .jinja file.{hint}"
    )


def template_text(value: str) -> str:
    """The Jinja text ``model.chat_template`` names: an existing file's contents, else a shipped
    template's. ModelError (with the names) when it is neither."""
    path = Path(value)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    if value in TEMPLATES:
        return TEMPLATES[value].text()
    if is_template_name(value):
        raise ModelError(unknown_name_message(value))
    raise ModelError(f"chat template file not found: {value} (model.chat_template)")


def check_markers(tokenizer, value: str, model: str) -> None:
    """A shipped template's markers must each be a single token of ``tokenizer``; ModelError
    naming the missing ones otherwise (a file template is the operator's own responsibility)."""
    spec = TEMPLATES.get(value)
    if spec is None or Path(value).is_file():
        return
    vocab = tokenizer.get_vocab()
    missing = [m for m in spec.markers if m not in vocab]
    if missing:
        raise ModelError(
            f"model.chat_template: {value} writes {', '.join(missing)}, which the tokenizer of "
            f"{model} does not have as single tokens, so the model could not learn where a turn "
            f"ends. Name the template of this model's family ({_families()}) or give a .jinja file"
        )


def _families() -> str:
    return "; ".join(f"{t.name}: {t.families}" for t in TEMPLATES.values())


def no_template_hint() -> str:
    """The sentence a missing chat template error ends with."""
    return (
        "base models ship none: set model.chat_template (data check / show: --chat-template) to a "
        f"named template ({', '.join(NAMES)}) or a .jinja file (docs/training.md, 'Chat templates')"
    )


__all__ = ["TEMPLATES", "NAMES", "template_text", "check_markers", "is_template_name", "no_template_hint"]
