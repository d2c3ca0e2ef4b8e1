"""batch 8 × accum 1 and batch 1 × accum 8 give the same gradients (token-normalised)."""

from __future__ import annotations

import pytest
import torch

from tunesmith.run import prepare


def _grads(tiny_model_dir, color_data, tmp_path, batch_size, grad_accum, adapter="lora", max_tokens=None):
    train, _ = color_data
    run = prepare(
        {
            "model": str(tiny_model_dir),
            "data": {"train": str(train), "eval_fraction": 0},
            "adapter": {"type": adapter, "r": 4, "alpha": 8, "dropout": 0.0},
            "train": {
                "batch_size": batch_size,
                "grad_accum": grad_accum,
                "packing": False,
                "max_length": 64,
                "seed": 3,
                "max_tokens_per_forward": max_tokens,
            },
            "output_dir": str(tmp_path / f"{adapter}-b{batch_size}a{grad_accum}t{max_tokens}"),
        }
    )
    stats = run.trainer.accumulate(0)
    grads = {n: p.grad.clone() for n, p in run.model.named_parameters() if p.requires_grad}
    return grads, stats


@pytest.mark.parametrize("adapter", ["lora", "none"])
def test_batch_times_accumulation_equivalence(tiny_model_dir, color_data, tmp_path, adapter):
    g_big, s_big = _grads(tiny_model_dir, color_data, tmp_path, 8, 1, adapter)
    g_acc, s_acc = _grads(tiny_model_dir, color_data, tmp_path, 1, 8, adapter)
    assert s_big["n"] == s_acc["n"] > 0  # same 8 examples, same supervised tokens
    assert s_big["loss_sum"] == pytest.approx(s_acc["loss_sum"], rel=1e-6)
    assert g_big.keys() == g_acc.keys()
    for name in g_big:
        torch.testing.assert_close(g_acc[name], g_big[name], rtol=1e-5, atol=1e-7, msg=name)
    assert any(g.abs().sum() > 0 for g in g_big.values())


def test_splitting_a_micro_batch_into_passes_keeps_gradients(tiny_model_dir, color_data, tmp_path):
    whole, s_whole = _grads(tiny_model_dir, color_data, tmp_path, 8, 1, max_tokens=100000)
    split, s_split = _grads(tiny_model_dir, color_data, tmp_path, 8, 1, max_tokens=64)
    assert s_whole["n"] == s_split["n"] and s_split["tokens"] == s_whole["tokens"]
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], rtol=1e-5, atol=1e-7, msg=name)


def test_gradient_checkpointing_keeps_gradients(tiny_model_dir, color_data, tmp_path):
    train, _ = color_data
    grads = []
    for ckpt in (False, True):
        run = prepare(
            {
                "model": str(tiny_model_dir),
                "data": {"train": str(train), "eval_fraction": 0},
                "adapter": {"r": 4, "alpha": 8, "dropout": 0.0},
                "train": {"batch_size": 4, "max_length": 64, "gradient_checkpointing": ckpt},
                "output_dir": str(tmp_path / f"gc{ckpt}"),
            }
        )
        run.trainer.accumulate(0)
        grads.append({n: p.grad.clone() for n, p in run.model.named_parameters() if p.requires_grad})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7, msg=name)
