"""Scalar reward models: load one and score conversations with it.

A tunesmith reward model is a Hugging Face ``*ForSequenceClassification`` model with
``num_labels == 1`` (a linear ``score`` head over the decoder's final hidden states). The
reward of a conversation is the head's output at its **last token** (the token after the final
end-of-turn marker of the chat template) — the convention of InstructGPT-style reward models
(Ouyang et al. 2022, §3.5) and of TRL's ``RewardTrainer``.

What ``method: reward`` writes to ``RUN/final`` (and what :func:`load_reward_model` reads):

- full fine-tuning (``adapter.type: none``): the whole sequence-classification model
  (``config.json`` with ``architectures: [...ForSequenceClassification]``, ``num_labels: 1``,
  ``model.safetensors``) plus the tokenizer — loadable by ``AutoModelForSequenceClassification``;
- LoRA / DoRA: a PEFT adapter folder (``adapter_config.json`` with ``task_type: SEQ_CLS``,
  ``adapter_model.safetensors`` holding the LoRA weights *and* the trained ``score`` head as a
  ``modules_to_save`` module) plus the tokenizer. The base named by
  ``base_model_name_or_path`` is the causal-LM folder training started from; its LM head is
  ignored and the score head comes from the adapter.

Both training and scoring tokenise a conversation with :func:`conversation_ids`, so a score at
inference is computed on exactly the tokens the model was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError
from .load import check_model_dir, load_tokenizer
from .template import render_chat

_HEAD_NAMES = ("score", "classifier")


def conversation_ids(tokenizer, messages: list[dict], tools=None) -> list[int]:
    """Token ids of a conversation exactly as ``method: reward`` trains on it.

    The trailing assistant turn(s) are the answer: the rest is rendered with the generation
    prompt and the answer is the template's continuation after it, trailing whitespace after
    the end-of-turn marker dropped (:class:`tunesmith.data.preference.PairRenderer`). A
    conversation that does not end with an assistant turn is rendered whole.
    """
    from ..data.preference import PairRenderer

    k = len(messages)
    while k > 0 and messages[k - 1].get("role") == "assistant":
        k -= 1
    renderer = PairRenderer(tokenizer, max_length=1 << 30)
    if 0 < k < len(messages):
        prompt_ids, (answer_ids,) = renderer.ids(
            list(messages[:k]), [list(messages[k:])], tools, "conversation"
        )
        return prompt_ids + answer_ids
    text = render_chat(tokenizer, messages, tools=tools)
    return renderer.encode(text.rstrip(" \n") or text)


def reward_head(model: nn.Module) -> nn.Module:
    """The scalar head (``score`` / ``classifier``) of a (possibly PEFT-wrapped) model."""
    from .adapters import unwrap

    hf = unwrap(model)
    for name in _HEAD_NAMES:
        head = getattr(hf, name, None)
        if isinstance(head, nn.Module):
            return head
    raise ModelError(
        f"{type(hf).__name__} has no sequence-classification head "
        f"({' / '.join(_HEAD_NAMES)}); not a reward model"
    )


def rewards_at(model: nn.Module, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rewards ``[N]`` (fp32) read from ``hidden [T, H]`` at the flat ``positions [N]``."""
    return reward_head(model)(hidden.index_select(0, positions)).squeeze(-1).float()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not read {path}: {exc}") from None


def _load_seq_cls(path: str, dtype: torch.dtype):
    from transformers import AutoModelForSequenceClassification

    try:
        return AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, dtype=dtype, use_safetensors=True, trust_remote_code=False
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load {path} as a sequence-classification model: {exc}") from None


def _resolve_base(adapter_dir: Path, base: str | None) -> str:
    """The base model folder of a PEFT adapter: ``base`` if given, else the recorded one
    (a relative record is tried against the working directory, then the adapter folder)."""
    if base:
        return str(check_model_dir(base))
    recorded = _read_json(adapter_dir / "adapter_config.json").get("base_model_name_or_path")
    if not recorded:
        raise ModelError(f"{adapter_dir}/adapter_config.json names no base model; pass base=…")
    for candidate in (Path(recorded), adapter_dir / recorded):
        if (candidate / "config.json").is_file() or candidate.is_file():  # a folder or a GGUF file
            return str(check_model_dir(str(candidate)))
    raise ModelError(
        f"the base model of the adapter in {adapter_dir} was not found: "
        f"{recorded} (pass the base folder explicitly)"
    )


def load_reward_model(
    path: str,
    device: str | torch.device = "cpu",
    *,
    base: str | None = None,
    dtype: torch.dtype = torch.float32,
):
    """Load a reward model for scoring; returns ``(model, tokenizer)`` with the model in eval mode.

    ``path`` is a full ``*ForSequenceClassification`` folder with ``num_labels == 1`` or a PEFT
    adapter folder over one (see the module docstring); ``base`` overrides the adapter's
    recorded base folder. The tokenizer is read from ``path`` when it holds one, else from
    the base. Raises :class:`ModelError` for anything that is not a scalar reward model.
    """
    folder = check_model_dir(path)
    if (folder / "adapter_config.json").is_file():
        from .adapters import open_adapter

        adapter_cfg = _read_json(folder / "adapter_config.json")
        saved = set(adapter_cfg.get("modules_to_save") or [])
        if adapter_cfg.get("task_type") != "SEQ_CLS" and not saved & set(_HEAD_NAMES):
            raise ModelError(
                f"{path} is an adapter without a trained score head "
                f"(task_type {adapter_cfg.get('task_type')!r}); not a reward model"
            )
        base_dir = _resolve_base(folder, base)
        model = _load_seq_cls(base_dir, dtype)
        try:
            model = open_adapter(model, folder)
        except Exception as exc:
            raise ModelError(f"could not load the adapter in {path} over {base_dir}: {exc}") from None
        tok_dir = str(folder) if (folder / "tokenizer.json").is_file() else base_dir
    else:
        config = _read_json(folder / "config.json")
        archs = config.get("architectures") or []
        if not any(a.endswith("ForSequenceClassification") for a in archs):
            raise ModelError(
                f"{path} is a {', '.join(archs) or 'model'} checkpoint, not a reward "
                "model (expected a *ForSequenceClassification model, e.g. the result "
                "of `method: reward`)"
            )
        labels = config.get("num_labels") or len(config.get("id2label") or {}) or 1
        if labels != 1:
            raise ModelError(f"{path} is a classifier with {labels} labels; a reward model has one")
        model = _load_seq_cls(str(folder), dtype)
        tok_dir = str(folder)
    tokenizer = load_tokenizer(tok_dir)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.to(device).eval()
    return model, tokenizer


@torch.no_grad()
def score(
    model: nn.Module,
    tokenizer,
    conversations: list[list[dict]],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
) -> list[float]:
    """The reward of each conversation (list of ``{"role", "content"}`` messages), in order.

    Conversations are chat-templated with :func:`conversation_ids`, sorted by length and run
    in right-padded batches of ``batch_size``; each reward is the head's output at the
    conversation's last token. ``max_length`` keeps the *last* ``max_length`` tokens of
    longer conversations (the reward is read at the end).
    """
    from .adapters import unwrap

    device = next(model.parameters()).device
    ids = [conversation_ids(tokenizer, conv) for conv in conversations]
    if max_length:
        ids = [x[-max_length:] for x in ids]
    if any(len(x) == 0 for x in ids):
        raise ModelError("a conversation rendered to no tokens")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    decoder = unwrap(model).get_decoder()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = [0.0] * len(ids)
    for s in range(0, len(order), batch_size):
        chunk = order[s : s + batch_size]
        width = max(len(ids[i]) for i in chunk)
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
            mask[row, : len(ids[i])] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        hidden = decoder(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
        last = mask.sum(dim=1) - 1
        flat = hidden.reshape(-1, hidden.shape[-1])
        positions = torch.arange(len(chunk), device=device) * width + last
        for i, r in zip(chunk, rewards_at(model, flat, positions).tolist()):
            out[i] = r
    return out
