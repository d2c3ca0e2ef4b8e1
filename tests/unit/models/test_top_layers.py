"""``adapter.top_layers``: LoRA only in the top N blocks; nothing below them takes part in the
backward pass; out-of-range values and a full fine-tune are refused naming the field."""

from __future__ import annotations

import pytest
import torch

from tunesmith.config import load_config
from tunesmith.config.load import validate
from tunesmith.errors import ConfigError
from tunesmith.models.adapters import attach_adapter
from tunesmith.models.load import load_causal_lm


def _cfg(tiny_model_dir, **adapter):
    section = {"type": "lora", "r": 4, "alpha": 8, **adapter}
    return load_config({"model": str(tiny_model_dir), "data": {"train": "x.jsonl"}, "adapter": section})


def test_only_the_top_blocks_get_adapters_and_gradients(tiny_model_dir):
    base = load_causal_lm(str(tiny_model_dir))
    n = base.config.num_hidden_layers
    assert n >= 2
    model = attach_adapter(base, _cfg(tiny_model_dir, top_layers=1).adapter)
    adapted = {
        int(name.split(".layers.")[1].split(".")[0])
        for name, _ in model.named_parameters()
        if "lora_" in name
    }
    assert adapted == {n - 1}
    # The blocks below run forward only: no activation of theirs needs a gradient.
    seen = []
    hooks = [
        layer.register_forward_hook(
            lambda mod, args, out, i=i: seen.append((i, out[0] if isinstance(out, tuple) else out))
        )
        for i, layer in enumerate(model.base_model.model.model.layers)
    ]
    loss = model(input_ids=torch.tensor([[1, 5, 9, 13, 17]]), labels=torch.tensor([[1, 5, 9, 13, 17]])).loss
    loss.backward()
    for h in hooks:
        h.remove()
    needs = {i: out.requires_grad for i, out in seen}
    assert needs == {i: i == n - 1 for i in range(n)}
    grads = [p.grad for name, p in model.named_parameters() if "lora_B" in name]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_top_layers_out_of_range_or_without_adapter(tiny_model_dir):
    base = load_causal_lm(str(tiny_model_dir))
    n = base.config.num_hidden_layers
    with pytest.raises(ConfigError, match=f"'adapter.top_layers' is {n + 1} but the model has {n} blocks"):
        attach_adapter(base, _cfg(tiny_model_dir, top_layers=n + 1).adapter)
    for bad in ({"top_layers": 0}, {"top_layers": 2, "type": "none"}):
        with pytest.raises(ConfigError, match="'adapter.top_layers' must be >= 1"):
            validate(_cfg(tiny_model_dir, **bad))


def test_init_from_must_have_the_same_top_layers(tiny_model_dir, tmp_path):
    model = attach_adapter(load_causal_lm(str(tiny_model_dir)), _cfg(tiny_model_dir, top_layers=1).adapter)
    model.save_pretrained(tmp_path, safe_serialization=True)
    validate(_cfg(tiny_model_dir, top_layers=1, init_from=str(tmp_path)))
    with pytest.raises(ConfigError, match="top_layers=1 but adapter.top_layers is None"):
        validate(_cfg(tiny_model_dir, init_from=str(tmp_path)))
