"""QLoRA building blocks: config rules, bitsandbytes layer bytes, quantised loading, dequantising."""

from __future__ import annotations

import pytest
import torch

from tunesmith.config import load_config, validate
from tunesmith.errors import ConfigError
from tunesmith.models.quantize import QuantSpec, quant_spec, quantized_weight_bytes

pytest.importorskip("bitsandbytes")


def _cfg(**sections):
    raw = {"model": "m", "data": {"train": "t.jsonl"}}
    raw.update(sections)
    return load_config(raw)


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"model": {"path": "m", "load_in_4bit": True, "load_in_8bit": True}}, "exclusive"),
        ({"model": {"path": "m", "load_in_8bit": True}, "adapter": {"type": "qlora"}}, "4-bit base"),
        ({"model": {"path": "m", "load_in_4bit": True}, "adapter": {"type": "none"}}, "is frozen"),
        ({"train": {"optimizer": "paged_adamw_8bit", "device": "cpu"}}, "needs a GPU"),
    ],
)
def test_config_rules(sections, message):
    with pytest.raises(ConfigError, match=message):
        validate(_cfg(**sections))


def test_quant_spec_from_config():
    assert quant_spec(_cfg().model, "lora", "cpu") is None
    spec = quant_spec(_cfg().model, "qlora", "cpu")
    assert (spec.bits, spec.quant_type, spec.double_quant, spec.compute_dtype) == (
        4,
        "nf4",
        True,
        torch.float32,
    )
    m = _cfg(model={"path": "m", "load_in_8bit": True}).model
    assert quant_spec(m, "lora", "cpu").bits == 8
    m = _cfg(model={"path": "m", "load_in_4bit": True, "quant_type": "fp4", "compute_dtype": "bf16"}).model
    assert quant_spec(m, "lora", "cpu") == QuantSpec(4, "fp4", True, torch.bfloat16)


def test_quantized_weight_bytes_by_hand():
    # A 128 x 256 weight: 32768 values.
    # 4-bit, no double quant: 32768 / 2 = 16384 data bytes + 32768 / 64 = 512 blocks x 4 bytes
    #   (fp32 absmax) = 2048  -> 18432.
    assert quantized_weight_bytes(32768, 128, QuantSpec(4, double_quant=False)) == 18432
    # Double quant: 512 one-byte absmax + ceil(512 / 256) = 2 fp32 second-level scales (8 bytes)
    #   + the 256-entry fp32 code (1024) -> 16384 + 512 + 8 + 1024 = 17928.
    assert quantized_weight_bytes(32768, 128, QuantSpec(4, double_quant=True)) == 17928
    # 8-bit: one byte per weight + an fp32 scale per output row: 32768 + 128 x 4 = 33280.
    assert quantized_weight_bytes(32768, 128, QuantSpec(8)) == 33280


def test_formula_matches_bitsandbytes_storage():
    import bitsandbytes as bnb

    for dq in (False, True):
        layer = bnb.nn.Linear4bit(
            256, 128, bias=False, compute_dtype=torch.float32, quant_type="nf4", compress_statistics=dq
        )
        layer.weight = bnb.nn.Params4bit(
            torch.randn(128, 256), requires_grad=False, quant_type="nf4", compress_statistics=dq
        )
        layer = layer.to("cpu")
        qs = layer.weight.quant_state
        held = layer.weight.data.nbytes + qs.absmax.nbytes
        if dq:
            held += qs.state2.absmax.nbytes + qs.state2.code.nbytes
        assert held == quantized_weight_bytes(32768, 128, QuantSpec(4, double_quant=dq))


@pytest.fixture(scope="module")
def quantized(tiny_model_dir):
    from tunesmith.models.load import load_causal_lm

    spec = QuantSpec(4, "nf4", True, torch.float32)
    return load_causal_lm(str(tiny_model_dir), quantization=spec), spec


def test_only_decoder_linears_are_quantized(quantized, tiny_model_dir):
    import bitsandbytes as bnb

    from tunesmith.models.adapters import parameter_counts
    from tunesmith.models.load import load_causal_lm
    from tunesmith.models.quantize import quantized_linears

    model, _ = quantized
    layers = quantized_linears(model)
    assert len(layers) == 2 * 7  # q k v o gate up down in each of the 2 layers
    assert all(
        isinstance(m, bnb.nn.Linear4bit)
        and m.weight.quant_state.quant_type == "nf4"
        and m.weight.quant_state.nested
        for m in layers.values()
    )
    assert type(model.lm_head) is torch.nn.Linear and model.lm_head.weight.dtype == torch.float32
    assert model.model.embed_tokens.weight.dtype == torch.float32
    assert model.model.norm.weight.dtype == torch.float32
    full = load_causal_lm(str(tiny_model_dir))
    assert parameter_counts(model)[1] == parameter_counts(full)[1]  # weights, not packed bytes


def test_dequantize_into_reproduces_quantized_forward(quantized, tiny_model_dir):
    from tunesmith.models.load import load_causal_lm
    from tunesmith.models.quantize import dequantize_into

    model, _ = quantized
    full = load_causal_lm(str(tiny_model_dir))
    original = full.model.layers[0].mlp.up_proj.weight.detach().clone()
    assert dequantize_into(model, full) == 14
    w = full.model.layers[0].mlp.up_proj.weight
    assert w.dtype == torch.float32 and not torch.equal(w, original)
    # NF4 keeps each block within its absmax / ~7 (levels are 16 quantiles of N(0, 1) in [-1, 1]).
    assert (w - original).abs().max() <= original.abs().max() / 4
    ids = torch.randint(0, 300, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(full(ids).logits, model(ids).logits, atol=1e-4, rtol=0)


def test_optimizer_choice(tmp_path):
    import bitsandbytes as bnb

    from tunesmith.engine.optimizers import make_optimizer

    cfg = _cfg(train={"optimizer": "adamw_8bit"}).train
    p = torch.nn.Parameter(torch.randn(64, 128))
    opt = make_optimizer([{"params": [p], "weight_decay": 0.0}], cfg, torch.device("cpu"))
    assert isinstance(opt, bnb.optim.AdamW8bit)
    p.grad = torch.randn_like(p)
    before = p.detach().clone()
    opt.step()
    assert not torch.equal(before, p) and opt.state[p]["state1"].dtype == torch.uint8
    cfg = _cfg(train={"optimizer": "paged_adamw_8bit"}).train
    with pytest.raises(ConfigError, match="needs a GPU"):
        make_optimizer([{"params": [p], "weight_decay": 0.0}], cfg, torch.device("cpu"))


def test_peft_without_bitsandbytes_then_qlora_in_the_same_process(tiny_model_dir):
    """A LoRA run never imports bitsandbytes (PEFT would, ~1 s of start-up); a QLoRA model
    loaded later in the same process still gets PEFT's bitsandbytes LoRA layers. A fresh process:
    in this one PEFT is imported already."""
    import subprocess
    import sys

    script = f"""
import sys, torch
from tunesmith.config import AdapterConfig
from tunesmith.models.adapters import attach_adapter
from tunesmith.models.load import load_causal_lm
from tunesmith.models.quantize import QuantSpec, prepare_for_training
plain = attach_adapter(load_causal_lm({str(tiny_model_dir)!r}), AdapterConfig(r=4, alpha=8))
assert "peft" in sys.modules and "bitsandbytes" not in sys.modules, "LoRA imported bitsandbytes"
q = load_causal_lm({str(tiny_model_dir)!r}, quantization=QuantSpec(4, "nf4", True, torch.float32))
prepare_for_training(q)
q = attach_adapter(q, AdapterConfig(r=4, alpha=8))
kinds = {{type(m).__module__ + "." + type(m).__name__ for m in q.modules() if hasattr(m, "lora_A")}}
assert kinds == {{"peft.tuners.lora.bnb.Linear4bit"}}, kinds
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
