"""A tokenizer's chat template: rendering it safely, and the facts generation and export need."""

from __future__ import annotations

from ..errors import ModelError

_PROBE = "TUNESMITH_PROBE_REPLY"


def render_chat(
    tokenizer,
    messages: list[dict],
    *,
    tools=None,
    add_generation_prompt: bool = False,
    error: type[Exception] = ModelError,
    what: str = "the chat template",
) -> str:
    """``tokenizer.apply_chat_template(..., tokenize=False)``; every failure of the template is
    raised as ``error`` (a TunesmithError: one line, exit 2) naming ``what``.

    transformers renders templates in Jinja's immutable sandbox, so a template that reaches for
    Python internals (``''.__class__.__mro__``) raises ``SecurityError`` instead of running; that
    refusal, ``raise_exception()`` from the template and a missing template (base models have
    none: the error names ``model.chat_template``'s shipped templates) all land here."""
    from jinja2.exceptions import SecurityError

    if not getattr(tokenizer, "chat_template", None):
        from .named_templates import no_template_hint

        raise error(f"{what} is not set: {no_template_hint()}")
    try:
        return tokenizer.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except SecurityError as exc:
        raise error(f"{what} was refused: it tries an unsafe operation ({exc})") from None
    except Exception as exc:  # jinja raise_exception(), a missing template, a template bug ...
        raise error(f"{what} rejected the conversation: {exc}") from None


def stop_token_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant turn: the template's end-of-turn token(s) and EOS.

    Found by rendering a probe conversation and taking the first special token that follows
    the assistant's reply (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``, ``<|end|>``, ``</s>``).
    """
    ids = []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    if getattr(tokenizer, "chat_template", None):
        try:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}], tokenize=False
            )
        except Exception:
            text = ""
        tail = text.split(_PROBE, 1)[1] if _PROBE in text else ""
        special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        for tok_id in tokenizer.encode(tail, add_special_tokens=False):
            if tok_id in special:
                if tok_id not in ids:
                    ids.insert(0, tok_id)
                break
    return ids
