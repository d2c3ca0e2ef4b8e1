"""LoRA / DoRA under bf16 autocast store the frozen base's linear weights in bf16
(models/device.py): half the weights' memory, and — from a bf16 checkpoint — exactly the
numbers an fp32 load computes with under autocast."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tunesmith.models.device import frozen_base_dtype, keep_fp32_outside_linears
from tunesmith.models.load import load_causal_lm


def test_which_runs_store_a_half_base():
    assert frozen_base_dtype("lora", "bf16") is torch.bfloat16
    assert frozen_base_dtype("dora", "fp16") is torch.float16
    assert frozen_base_dtype("none", "bf16") is torch.float32  # full fine-tuning: fp32 weights
    assert frozen_base_dtype("lora", "fp32") is torch.float32
    assert frozen_base_dtype("lora", "bf16", quantized=True) is torch.float32


@pytest.fixture(scope="module")
def bf16_checkpoint(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bf16-model")
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).to(torch.bfloat16).save_pretrained(folder)
    for f in tiny_model_dir.iterdir():  # the tokenizer files
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            (folder / f.name).write_bytes(f.read_bytes())
    return folder


def test_half_base_computes_what_an_fp32_base_computes_under_autocast(bf16_checkpoint):
    full = load_causal_lm(str(bf16_checkpoint), dtype=torch.float32)
    half = load_causal_lm(str(bf16_checkpoint), dtype=torch.bfloat16)
    assert keep_fp32_outside_linears(half) > 0
    head = half.get_output_embeddings()
    for (name, p), (_, q) in zip(half.named_parameters(), full.named_parameters()):
        module = half.get_submodule(name.rsplit(".", 1)[0])
        if isinstance(module, torch.nn.Linear) and module is not head:
            assert p.dtype is torch.bfloat16, name
            assert torch.equal(p.float(), q), name
        else:
            assert p.dtype is torch.float32 and torch.equal(p, q), name
    for (name, b), (_, c) in zip(half.named_buffers(), full.named_buffers()):
        assert b.dtype == c.dtype and torch.equal(b, c), name
    ids = torch.randint(0, half.config.vocab_size, (1, 12))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(half(ids).logits, full(ids).logits)


def test_lora_run_in_bf16_trains_fp32_adapters_on_a_bf16_base(bf16_checkpoint, color_data, tmp_path):
    import tunesmith
    from tunesmith.run import prepare

    cfg = {
        "model": str(bf16_checkpoint),
        "data": {"train": str(color_data[0])},
        "adapter": {"type": "lora", "r": 4, "alpha": 8},
        "train": {"max_steps": 3, "batch_size": 4, "max_length": 64, "dtype": "bf16", "progress": "none"},
        "output_dir": str(tmp_path / "run"),
    }
    run = prepare(cfg)
    dtypes = {(p.requires_grad, p.dtype) for n, p in run.model.named_parameters() if "proj" in n}
    assert dtypes == {(False, torch.bfloat16), (True, torch.float32)}
    result = tunesmith.train(cfg)
    assert result.final_loss is not None and result.final_loss == result.final_loss  # finite
