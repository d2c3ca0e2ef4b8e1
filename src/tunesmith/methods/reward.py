"""Reward modelling, ``method: reward``: a scalar head trained with the Bradley–Terry loss.

The model is the base causal LM loaded as ``AutoModelForSequenceClassification`` with
``num_labels = 1`` (its LM head dropped, a fresh linear ``score`` head added). With adapters,
PEFT's ``SEQ_CLS`` task trains the head in full next to the LoRA weights and saves it in the
adapter; with ``adapter.type: none`` every weight is trained. The reward of an answer is the
head's output at its last token (:mod:`tunesmith.models.reward_model`, which also loads the
result and scores conversations — ``tunesmith reward score``).

Data: preference pairs, as for DPO; a numeric ``margin`` field on a row is the Llama 2 margin
``m`` of the loss ``−log σ(r_c − r_r − m)``. Each pair is one shared-prompt row, so the prompt
is encoded once. Logged: loss, accuracy (pairwise: r_c > r_r), margin, mean rewards.
"""

from __future__ import annotations

import logging

import torch

from ..config import RunConfig
from ..data.preference import load_pairs, render_pairs
from ..errors import ModelError
from ..losses.reward import bradley_terry_loss
from ..models.pair_forward import pair_hidden
from ..models.reward_model import rewards_at
from .common import MethodParts, PreparedData
from .reference import finish_prepare, pair_parts, render_split

log = logging.getLogger("tunesmith")


def prepare_data(config: RunConfig, tokenizer) -> PreparedData:
    return finish_prepare(config, *render_split(config, tokenizer, load_pairs, render_pairs))


def load_model(config: RunConfig, device):
    """The base model with a scalar sequence-classification head (safetensors only)."""
    from transformers import AutoModelForSequenceClassification

    from ..models.load import check_model_dir, load_tokenizer

    folder = check_model_dir(config.model.path)  # a GGUF file: its dequantised folder
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            folder,
            num_labels=1,
            dtype=torch.float32,
            use_safetensors=True,
            trust_remote_code=config.model.trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load {config.model.path} with a reward head: {exc}") from None
    # Saved with the result so that transformers' own pooling finds the last real token too.
    model.config.pad_token_id = load_tokenizer(
        config.model.tokenizer or config.model.path, config.model.chat_template
    ).pad_token_id
    return model.to(device)


def build(config: RunConfig, model=None, tokenizer=None) -> MethodParts:
    def loss_fn(model, batch):
        hidden = pair_hidden(model, batch)
        rewards = rewards_at(model, hidden, batch.last_positions)
        return bradley_terry_loss(rewards[0::2], rewards[1::2], margin=batch.margins)

    return pair_parts(loss_fn)
