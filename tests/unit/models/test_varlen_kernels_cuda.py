"""The varlen kernels on CUDA against the per-example loop: outputs and gradients in fp32 and bf16,
and a LoRA SFT run on the GPU. Skipped without a CUDA GPU; bench/gpu_check.sh runs them on a lent
one (``pytest -m cuda``)."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

import tunesmith
from tunesmith.models import varlen_kernels
from tunesmith.models.attention import register, varlen_attention_forward

pytestmark = pytest.mark.cuda

PLAIN = dict(bounds=[0, 70, 71, 190, 300])
# shared prompts, a 24-token window shorter than the segments, Gemma-2 style soft-cap
BRANCHED = dict(bounds=[0, 120, 200, 300], branches=[(40, 50), (0, 0), (30, 35)], window=24, softcap=20.0)
TOLERANCE = {torch.float32: dict(rtol=1e-3, atol=2e-4), torch.bfloat16: dict(rtol=3e-2, atol=3e-2)}


@contextlib.contextmanager
def _kernel(name: str):
    register(kernel=name)
    try:
        yield
    finally:
        register(kernel="auto")


def _inputs(t: int, heads=8, kv_heads=2, dim=64):
    g = torch.Generator(device="cuda").manual_seed(0)
    return [torch.randn(1, h, t, dim, device="cuda", generator=g) for h in (heads, kv_heads, kv_heads, heads)]


def _loop_reference(q, k, v, grad, spec):
    """Output ``[1, T, H, D]`` and (dq, dk, dv) of the per-example loop, in fp32."""
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    with _kernel("loop"):
        out, _ = varlen_attention_forward(
            torch.nn.Module().eval(),
            q,
            k,
            v,
            None,
            cu_seq_lens_q=torch.tensor(spec["bounds"]),
            softcap=spec.get("softcap"),
            sliding_window=spec.get("window"),
            tunesmith_branches=spec.get("branches"),
        )
    out.backward(grad.transpose(1, 2))
    return out, (q.grad, k.grad, v.grad)


CASES = [
    ("flex", PLAIN, torch.bfloat16),
    ("flex", BRANCHED, torch.float32),
    ("flex", BRANCHED, torch.bfloat16),
    ("nested", PLAIN, torch.float32),
    ("nested", PLAIN, torch.bfloat16),
    ("flash", PLAIN, torch.bfloat16),
    ("flash", BRANCHED, torch.bfloat16),
]


@pytest.mark.parametrize(
    ("kernel", "spec", "dtype"),
    CASES,
    ids=[f"{k}-{'branched' if s is BRANCHED else 'plain'}-{str(d)[6:]}" for k, s, d in CASES],
)
def test_kernel_matches_loop(kernel, spec, dtype):
    if kernel == "flash" and not varlen_kernels.flash_available():
        pytest.skip("flash_attn is not installed")
    q, k, v, grad = _inputs(spec["bounds"][-1])
    want, want_grads = _loop_reference(q, k, v, grad, spec)
    q, k, v = (x.to(dtype).requires_grad_() for x in (q, k, v))
    got = varlen_kernels.packed_attention(
        kernel,
        q,
        k,
        v,
        spec["bounds"],
        spec.get("branches"),
        64**-0.5,
        spec.get("softcap"),
        spec.get("window"),
        0.0,
    )
    got.backward(grad.transpose(1, 2).to(dtype))
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(got.float(), want, **tol)
    for name, g, w in zip("qkv", (q.grad, k.grad, v.grad), want_grads):
        torch.testing.assert_close(g.float(), w, **tol, msg=lambda m, name=name: f"d{name}: {m}")


def _train(model_dir, data, out, kernel: str) -> list[float]:
    result = tunesmith.train(
        {
            "model": {"path": str(model_dir), "attention_kernel": kernel},
            "data": {"train": str(data), "eval_fraction": 0},
            "adapter": {"type": "lora", "r": 8, "dropout": 0.0},
            "train": {
                "max_steps": 3,
                "batch_size": 4,
                "packing": True,
                "max_length": 128,
                "device": "cuda",
                "dtype": "bf16",
                "save_every": 0,
                "eval_every": 0,
                "progress": "none",
            },
            "output_dir": str(out),
        }
    )
    register(kernel="auto")
    return [row["loss"] for row in result.history]


def test_lora_sft_on_cuda_with_one_kernel_call(tiny_model_dir, color_data, tmp_path):
    """A packed bf16 LoRA run on the GPU attends with a varlen kernel, not the loop, and its
    first loss (before any update) matches the loop's."""
    fast = _train(tiny_model_dir, color_data[0], tmp_path / "auto", "auto")
    ran = varlen_kernels.kernels_ran()
    assert "flex@cuda" in ran or "flash@cuda" in ran, ran
    slow = _train(tiny_model_dir, color_data[0], tmp_path / "loop", "loop")
    assert all(math.isfinite(x) for x in fast + slow)
    assert fast[0] == pytest.approx(slow[0], rel=2e-2)
