"""load_reward_model / score: full and adapter folders, last-token pooling, padding invariance."""

from __future__ import annotations

import json

import pytest
import torch

from tunesmith.errors import ModelError
from tunesmith.models.reward_model import conversation_ids, load_reward_model, score

CONVS = [
    [{"role": "user", "content": "what color is the sky?"}, {"role": "assistant", "content": "blue."}],
    [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "the sun is yellow and warm."}],
    [{"role": "user", "content": "one two three"}, {"role": "assistant", "content": "four"}],
]


def _seq_cls(model_dir):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)


def _unbatched_reward(model, tokenizer, conv) -> float:
    """Reference: one conversation, no padding, head at the last position."""
    ids = torch.tensor([conversation_ids(tokenizer, conv)])
    with torch.no_grad():
        hidden = model.get_decoder()(input_ids=ids).last_hidden_state
        return float(model.score(hidden[0, -1]))


def test_full_folder_scores_match_unbatched(tmp_path, tiny_model_dir, tiny_tokenizer):
    model = _seq_cls(tiny_model_dir)
    model.save_pretrained(tmp_path / "rm")
    tiny_tokenizer.save_pretrained(tmp_path / "rm")
    loaded, tok = load_reward_model(str(tmp_path / "rm"))
    got = score(loaded, tok, CONVS, batch_size=2)  # lengths differ: padding in the batch
    want = [_unbatched_reward(model.eval(), tiny_tokenizer, c) for c in CONVS]
    assert got == pytest.approx(want, abs=1e-5)
    assert len({round(x, 6) for x in got}) == 3  # distinct conversations, distinct rewards


def test_adapter_folder_restores_the_trained_head(tmp_path, tiny_model_dir, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        _seq_cls(tiny_model_dir), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="SEQ_CLS")
    )
    with torch.no_grad():  # make head and LoRA non-trivial so a wrong load would show
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path / "rm")
    tiny_tokenizer.save_pretrained(tmp_path / "rm")
    want = score(model.eval(), tiny_tokenizer, CONVS)
    loaded, _ = load_reward_model(str(tmp_path / "rm"))
    assert score(loaded, tiny_tokenizer, CONVS) == pytest.approx(want, abs=1e-5)


def test_causal_lm_folder_is_rejected(tiny_model_dir):
    with pytest.raises(ModelError, match="not a reward"):
        load_reward_model(str(tiny_model_dir))


def test_multilabel_classifier_is_rejected(tmp_path, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert len(cfg["id2label"]) == 3
    with pytest.raises(ModelError, match="3 labels"):
        load_reward_model(str(tmp_path))
