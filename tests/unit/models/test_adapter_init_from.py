"""``adapter.init_from``: an adapter folder of an earlier run initialises the freshly attached
adapter bitwise; a folder of another shape, or without a safetensors adapter, is a ConfigError
naming the field."""

from __future__ import annotations

import re

import pytest
import torch

from tunesmith.config import load_config
from tunesmith.config.load import validate
from tunesmith.errors import ConfigError
from tunesmith.models.adapters import attach_adapter
from tunesmith.models.load import load_causal_lm

TARGETS = ["q_proj", "v_proj"]


def _cfg(tiny_model_dir, **adapter):
    section = {"type": "lora", "r": 4, "alpha": 8, "targets": TARGETS, **adapter}
    return load_config({"model": str(tiny_model_dir), "data": {"train": "x.jsonl"}, "adapter": section})


@pytest.fixture(scope="module")
def saved_adapter(tmp_path_factory, tiny_model_dir):
    """A LoRA adapter (r=4, alpha=8, q/v) with random, non-zero A and B, saved by PEFT."""
    model = attach_adapter(load_causal_lm(str(tiny_model_dir)), _cfg(tiny_model_dir).adapter)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def test_init_from_loads_every_adapter_tensor_bitwise(tiny_model_dir, saved_adapter):
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    cfg = _cfg(tiny_model_dir, init_from=str(saved_adapter))
    validate(cfg)
    model = attach_adapter(load_causal_lm(str(tiny_model_dir)), cfg.adapter)
    saved = load_file(str(saved_adapter / "adapter_model.safetensors"))
    loaded = get_peft_model_state_dict(model)
    assert set(loaded) == set(saved) and len(saved) == 2 * 2 * 2  # 2 layers x {q, v} x {A, B}
    for name, tensor in saved.items():
        assert torch.equal(loaded[name], tensor), name
    # Without init_from, PEFT starts B at zero: the load really replaced the fresh init.
    fresh = get_peft_model_state_dict(
        attach_adapter(load_causal_lm(str(tiny_model_dir)), _cfg(tiny_model_dir).adapter)
    )
    assert all(not v.any() for k, v in fresh.items() if "lora_B" in k)
    assert all(loaded[k].any() for k in fresh if "lora_B" in k)
    # and the tensors are the trainable parameters the optimizer will update
    assert all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)


@pytest.mark.parametrize(
    "adapter, field",
    [
        ({"r": 8}, "r=4 but adapter.r is 8"),
        ({"alpha": 16}, "alpha=8.0 but adapter.alpha is 16.0"),
        ({"type": "dora"}, "type='lora' but adapter.type is 'dora'"),
        ({"targets": ["q_proj", "k_proj"]}, "targets="),
        ({"type": "none"}, "needs adapter.type lora"),
    ],
)
def test_a_different_shape_is_refused_naming_the_field(tiny_model_dir, saved_adapter, adapter, field):
    with pytest.raises(ConfigError) as info:
        validate(_cfg(tiny_model_dir, init_from=str(saved_adapter), **adapter))
    assert "'adapter.init_from'" in str(info.value) and field in str(info.value)


def test_resolved_targets_are_checked_when_attaching(tiny_model_dir, saved_adapter):
    # ``all-linear`` is resolved against the model, so only attach can compare it.
    cfg = _cfg(tiny_model_dir, init_from=str(saved_adapter), targets="all-linear")
    validate(cfg)
    with pytest.raises(ConfigError, match=r"'adapter.init_from' .* targets="):
        attach_adapter(load_causal_lm(str(tiny_model_dir)), cfg.adapter)


def _renamed_targets(saved_adapter, folder, targets: list[str] | str):
    """``saved_adapter``'s files with ``target_modules`` rewritten to ``targets``."""
    import json

    folder.mkdir()
    config = json.loads((saved_adapter / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "target_modules": targets}))
    name = "adapter_model.safetensors"
    (folder / name).write_bytes((saved_adapter / name).read_bytes())
    return folder


@pytest.mark.parametrize("form", ["full names", "regex"])
def test_targets_are_compared_by_the_modules_they_select(tiny_model_dir, saved_adapter, tmp_path, form):
    # Tinker API checkpoints name every adapted layer exactly (a regex of the full names): the
    # same layers as q/v load; names that select other layers (only block 0) are refused.
    full = [f"model.layers.{i}.self_attn.{t}" for i in range(2) for t in TARGETS]
    write = (
        (lambda names: names)
        if form == "full names"
        else (lambda names: "|".join(re.escape(n) for n in names))
    )
    for names, ok in ((full, True), (full[:2], False)):
        folder = _renamed_targets(saved_adapter, tmp_path / f"{ok}", write(names))
        cfg = _cfg(tiny_model_dir, init_from=str(folder))
        validate(cfg)
        model = load_causal_lm(str(tiny_model_dir))
        if ok:
            attach_adapter(model, cfg.adapter)
        else:
            with pytest.raises(ConfigError, match=r"'adapter.init_from' .* targets="):
                attach_adapter(model, cfg.adapter)


def test_an_adapter_of_the_lm_head_loads(tiny_model_dir, tmp_path):
    # save_final (and the Tinker API) write the head's LoRA tensors only, not its base weight.
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    targets = ["q_proj", "lm_head"]
    model = attach_adapter(load_causal_lm(str(tiny_model_dir)), _cfg(tiny_model_dir, targets=targets).adapter)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.5)
    model.save_pretrained(tmp_path, safe_serialization=True, save_embedding_layers=False)
    cfg = _cfg(tiny_model_dir, targets=targets, init_from=str(tmp_path))
    validate(cfg)
    loaded = get_peft_model_state_dict(
        attach_adapter(load_causal_lm(str(tiny_model_dir)), cfg.adapter), save_embedding_layers=False
    )
    saved = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert any("lm_head" in k for k in saved) and set(loaded) == set(saved)
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())


def test_a_folder_without_a_safetensors_adapter_is_refused(tiny_model_dir, saved_adapter, tmp_path):
    with pytest.raises(ConfigError, match="no adapter_config.json"):
        validate(_cfg(tiny_model_dir, init_from=str(tmp_path)))
    (tmp_path / "adapter_config.json").write_bytes((saved_adapter / "adapter_config.json").read_bytes())
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")  # never unpickled
    with pytest.raises(ConfigError, match="safetensors only"):
        validate(_cfg(tiny_model_dir, init_from=str(tmp_path)))
