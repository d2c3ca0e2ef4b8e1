"""The memory estimator: hand-counted parameters and bytes, and the meta-device activation trace
checked against the tensors a real CPU forward saves."""

from __future__ import annotations

import pytest
import torch

from tunesmith.config import load_config
from tunesmith.models.memory import activation_bytes, estimate_memory, tokens_per_pass


def test_tokens_per_pass():
    assert tokens_per_pass(8, 512, 1024) == 1024  # 8 rows of 512, passes of <= 1024 tokens
    assert tokens_per_pass(1, 2048, 1024) == 2048  # one example longer than the limit
    assert tokens_per_pass(4, 128, None) == 512  # no limit: the whole micro-batch


def _cfg(model_dir, **train):
    return load_config(
        {
            "model": str(model_dir),
            "data": {"train": "t.jsonl"},
            "adapter": {"type": "lora", "r": 8, "alpha": 16},
            "train": {"batch_size": 1, "max_length": 64, **train},
        }
    )


def test_parameters_and_state_by_hand(tiny_model_dir, tiny_tokenizer):
    V = len(tiny_tokenizer)
    # tiny Llama: hidden 64, intermediate 128, 2 layers, 4 heads / 2 KV heads (head dim 16).
    # Per layer: q 64x64 = 4096, k 64x32 = 2048, v 2048, o 4096, gate/up/down 64x128 = 8192 each
    #   -> 36864 linear weights; 2 layers -> 73728.
    # Embedding + untied head 2 x V x 64; norms 64 x (2 per layer x 2 + final) = 320.
    base = 73728 + 2 * V * 64 + 320
    # LoRA r = 8 adds r x (in + out) per projection: q 8x128 = 1024, k 8x96 = 768, v 768,
    #   o 1024, gate/up/down 8x192 = 1536 each -> 8192 per layer -> 16384.
    lora = 16384
    est = estimate_memory(_cfg(tiny_model_dir), mode="lora", device="cpu")
    assert (est.params, est.trainable_params) == (base, lora)
    assert est.weights == 4 * base  # fp32 base
    assert (est.trainable, est.grads, est.optimizer) == (4 * lora, 4 * lora, 8 * lora)  # AdamW: m, v
    full = estimate_memory(_cfg(tiny_model_dir), mode="full", device="cpu")
    assert (full.trainable_params, full.weights, full.optimizer) == (base, 0, 8 * base)
    # CPU AdamW steps one tensor at a time: sqrt(v) and sqrt(v) / c of the largest tensor, here
    # the embedding (= the untied head), V x 64 fp32 values. LoRA's largest: gate/up lora_B and
    # down lora_A, 128 x 8 = 1024 values.
    assert full.optimizer_step == 2 * 4 * V * 64 and est.optimizer_step == 2 * 4 * 1024
    # On CUDA the multi-tensor step takes sqrt(v) of every parameter at once.
    assert estimate_memory(_cfg(tiny_model_dir), mode="full", device="cuda").optimizer_step == 4 * base
    q = estimate_memory(_cfg(tiny_model_dir), mode="qlora", device="cpu")
    # 4-bit double-quant bytes of each projection (see test_quantize for the formula), x 2 layers,
    # plus the unquantised embedding, head and norms in fp32.
    per_layer = sum(
        (n + 1) // 2 + -(-n // 64) + 4 * -((n // 64 + (n % 64 > 0)) // -256) + 1024
        for n in (4096, 2048, 2048, 4096, 8192, 8192, 8192)
    )
    assert q.weights == 2 * per_layer + 4 * (2 * V * 64 + 320)
    assert q.trainable_params == lora and q.peak < est.peak
    compact = _cfg(tiny_model_dir, heap="compact")
    assert (
        estimate_memory(compact, mode="qlora", device="cpu").peak
        < estimate_memory(compact, mode="lora", device="cpu").peak
        < estimate_memory(compact, mode="full", device="cpu").peak
    )
    # The 8-bit optimizer keeps 2 bytes per value (+ an fp32 scale per 256 and the two 256-entry
    # codes) for tensors of >= 4096 values, 8 bytes below: lora_A of gate is 8 x 64 = 512 values.
    eight = estimate_memory(_cfg(tiny_model_dir, optimizer="adamw_8bit"), mode="lora", device="cpu")
    assert eight.optimizer == 8 * lora and eight.optimizer_step == 0  # all LoRA tensors < 4096


def test_checkpointing_and_pass_size_scale_activations(tiny_model_dir):
    plain = estimate_memory(_cfg(tiny_model_dir, max_length=128), mode="lora", device="cpu")
    ckpt = estimate_memory(
        _cfg(tiny_model_dir, max_length=128, gradient_checkpointing=True), mode="lora", device="cpu"
    )
    longer = estimate_memory(_cfg(tiny_model_dir, max_length=256), mode="lora", device="cpu")
    assert ckpt.activations < plain.activations
    assert longer.activations == pytest.approx(2 * plain.activations, rel=0.05)  # O(T) attention


@pytest.mark.parametrize("full,top", [(False, None), (True, None), (False, 1), (False, 2)])
def test_meta_trace_matches_a_real_cpu_forward(tiny_model_dir, full, top):
    """The bytes saved for backward by a real CPU training forward (tunesmith's varlen attention,
    fused CE) equal the meta-device trace's within 2 % — also with LoRA in the top blocks only
    (``adapter.top_layers``: the blocks below keep nothing)."""
    from transformers import AutoConfig

    from tunesmith.config import AdapterConfig
    from tunesmith.data.collate import collate
    from tunesmith.data.render import Rendered
    from tunesmith.models.adapters import attach_adapter
    from tunesmith.models.attention import register
    from tunesmith.models.forward import token_loss
    from tunesmith.models.load import load_causal_lm

    T = 96
    adapter = AdapterConfig(r=8, alpha=16, dropout=0.05, top_layers=top)
    model = load_causal_lm(str(tiny_model_dir))
    model.set_attn_implementation(register())
    model.config.use_cache = False
    if full:
        model.requires_grad_(True)
    else:
        model.requires_grad_(False)
        model = attach_adapter(model, adapter)
    model.train()
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    saved = {}

    def pack(t):
        s = t.untyped_storage()
        if s._cdata not in params:
            saved[s._cdata] = s.nbytes()
        return t

    ids = torch.randint(0, 300, (T,)).tolist()
    batch = collate([Rendered(ids, [1] * T, "x")])
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        token_loss(model, batch)
    real = sum(saved.values())
    config = AutoConfig.from_pretrained(tiny_model_dir)
    traced, _ = activation_bytes(
        config, adapter, full=full, tokens=T, segment=T, checkpointing=False, chunk_size=1024
    )
    assert traced == pytest.approx(real, rel=0.02)


def test_heap_slack_follows_train_heap(tiny_model_dir):
    """``train.heap: fast`` (auto's choice without quantisation) counts the freed memory glibc's
    heap holds at a pass's peak, HEAP_SLACK x the pass's activations, on CPU only; compact and
    QLoRA under auto count none."""
    from tunesmith.models.memory import HEAP_SLACK, HEAP_SLACK_CHECKPOINTED

    fast = estimate_memory(_cfg(tiny_model_dir), mode="lora", device="cpu")
    assert fast.heap == "fast" and fast.heap_slack == int(HEAP_SLACK * fast.activations) > 0
    # gradient checkpointing chose memory: auto is compact; asked for fast, its own factor
    ckpt = _cfg(tiny_model_dir, gradient_checkpointing=True)
    assert estimate_memory(ckpt, mode="lora", device="cpu").heap_slack == 0
    ckpt_fast = estimate_memory(_cfg(tiny_model_dir, gradient_checkpointing=True, heap="fast"), device="cpu")
    assert ckpt_fast.heap_slack == int(HEAP_SLACK_CHECKPOINTED * ckpt_fast.activations)
    compact = estimate_memory(_cfg(tiny_model_dir, heap="compact"), mode="lora", device="cpu")
    assert (compact.heap, compact.heap_slack) == ("compact", 0)
    assert fast.peak - compact.peak == fast.heap_slack
    assert "heap slack" in fast.summary() and "heap slack" not in compact.summary()
    assert estimate_memory(_cfg(tiny_model_dir), mode="qlora", device="cpu").heap_slack == 0
    assert estimate_memory(_cfg(tiny_model_dir), mode="lora", device="cuda").heap_slack == 0
