"""Facts about a tokenizer's chat template that generation and export need."""

from __future__ import annotations

_PROBE = "TUNESMITH_PROBE_REPLY"


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
                [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}],
                tokenize=False)
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
