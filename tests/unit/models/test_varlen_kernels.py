"""The one-call varlen kernels (models/varlen_kernels.py) against the per-example loop on CPU.

PyTorch has FlexAttention's forward on CPU but no backward there, and no causal nested-tensor
SDPA on CPU at all: so these compare forward outputs (fp32, eager FlexAttention — compiled
FlexAttention on CPU is wrong in torch 2.13 for lengths that are not a multiple of 128, which is
why tunesmith runs it eager on CPU), check the refusals, and leave gradients and the nested /
flash kernels to the CUDA tests (test_varlen_kernels_cuda.py, run by bench/gpu_check.sh).
"""

from __future__ import annotations

import factory
import pytest
import torch

from tunesmith.config import load_config, validate
from tunesmith.data.collate import collate
from tunesmith.data.pair_collate import collate_pairs
from tunesmith.data.preference import PairItem
from tunesmith.data.render import Rendered
from tunesmith.errors import ConfigError
from tunesmith.models import varlen_kernels
from tunesmith.models.attention import register, varlen_attention_forward
from tunesmith.models.forward import token_loss
from tunesmith.models.pair_forward import pair_hidden

pytestmark = pytest.mark.filterwarnings("ignore:.*flex_attention called without torch.compile.*")


def _qkv(t: int, heads=4, kv_heads=2, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, h, t, dim, generator=g) for h in (heads, kv_heads, kv_heads)]


def _loop(q, k, v, bounds, branches=None, softcap=None, window=None):
    """The reference: attention.py's per-example loop (the CPU path under ``auto``)."""
    out, _ = varlen_attention_forward(
        torch.nn.Module().eval(),
        q,
        k,
        v,
        None,
        cu_seq_lens_q=torch.tensor(bounds),
        softcap=softcap,
        sliding_window=window,
        tunesmith_branches=branches,
    )
    return out


def test_layout_of_plain_and_branched_segments():
    # segment 0: plain, 3 tokens; segment 1: prompt 2 | A 2 | B 2 (B restarts at position 2)
    lay = varlen_kernels.build_layout([0, 3, 9], [(0, 0), (2, 2)], "cpu")
    assert lay.doc.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert lay.vpos.tolist() == [0, 1, 2, 0, 1, 2, 3, 2, 3]
    assert lay.branch.tolist() == [0, 0, 0, 0, 0, 1, 1, 2, 2]
    # flash sequences: [0,3) over itself, [3,7) over itself, B's queries [7,9) over prompt + B
    assert lay.q_bounds == (0, 3, 7, 9)
    assert lay.k_index.tolist() == [0, 1, 2, 3, 4, 5, 6, 3, 4, 7, 8]
    assert lay.k_bounds == (0, 3, 7, 11)
    plain = varlen_kernels.build_layout([0, 4, 6], None, "cpu")
    assert plain.k_index is None and plain.q_bounds == plain.k_bounds == (0, 4, 6)


CASES = {
    "plain": dict(bounds=[0, 7, 19, 40]),
    "branches": dict(bounds=[0, 9, 30, 40], branches=[(3, 4), (0, 0), (4, 3)]),
    "window": dict(bounds=[0, 25, 40], branches=[(6, 10), (0, 0)], window=5),
    "softcap": dict(bounds=[0, 12, 40], branches=[(0, 0), (10, 9)], softcap=5.0),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_flex_forward_equals_loop(case, kv_heads):
    spec = CASES[case]
    q, k, v = _qkv(spec["bounds"][-1], kv_heads=kv_heads)
    want = _loop(q, k, v, **spec)
    with torch.no_grad():
        got = varlen_kernels.packed_attention(
            "flex",
            q,
            k,
            v,
            spec["bounds"],
            spec.get("branches"),
            16**-0.5,
            spec.get("softcap"),
            spec.get("window"),
            0.0,
        )
    assert got.shape == want.shape == (1, 40, 4, 16)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_flex_block_mask_is_built_once_per_layout():
    q, k, v = _qkv(40)
    spec = CASES["branches"]
    args = (spec["bounds"], spec["branches"], 0.25, None, None, 0.0)
    with torch.no_grad():
        varlen_kernels.packed_attention("flex", q, k, v, *args)
        layout = varlen_kernels._layout(spec["bounds"], spec["branches"], q.device)
        mask = layout.masks[None]
        varlen_kernels.packed_attention("flex", q, k, v, *args)  # the next layer: same batch
    assert layout.masks[None] is mask


def test_refusals_say_what_to_use():
    q, k, v = (x.requires_grad_() for x in _qkv(10))
    args = ([0, 4, 10], None, 0.25, None, None)
    with pytest.raises(ConfigError, match="no CPU backward.*attention_kernel loop"):
        varlen_kernels.packed_attention("flex", q, k, v, *args, 0.0)
    with pytest.raises(ConfigError, match="no attention dropout"):
        varlen_kernels.packed_attention("flex", q, k, v, *args, 0.1)
    with pytest.raises(ConfigError, match="no causal kernel on CPU"):
        varlen_kernels.packed_attention("nested", q, k, v, *args, 0.0)
    with pytest.raises(ConfigError, match="needs CUDA bf16/fp16"):
        varlen_kernels.packed_attention("flash", q, k, v, *args, 0.0)
    with pytest.raises(ConfigError, match="covering all 10 tokens"):
        varlen_kernels.packed_attention("flex", q, k, v, [0, 4, 9], None, 0.25, None, None, 0.0)
    with pytest.raises(ConfigError, match="not one of auto, loop, flex, flash, nested"):
        varlen_kernels.select("flash2")
    if not varlen_kernels.flash_available():
        with pytest.raises(ConfigError, match="needs the flash_attn package"):
            varlen_kernels.select("flash")
    assert varlen_kernels.selected() == "auto"


def test_auto_resolves_per_device():
    assert varlen_kernels.selected() == "auto"
    kernel_for = varlen_kernels.kernel_for
    assert kernel_for("cpu") == "loop"  # CPU stays on the exact loop
    flash = varlen_kernels.flash_available()
    assert kernel_for("cuda") == ("flash" if flash else "flex")
    assert kernel_for("cuda", half=False) == "flex"  # flash_attn computes in bf16/fp16 only
    if not flash:  # dropout: flex has none; nested takes plain segments, the loop the rest
        assert kernel_for("cuda", dropout=0.1) == "nested"
        assert kernel_for("cuda", dropout=0.1, branched=True) == "loop"
        assert kernel_for("cuda", dropout=0.1, softcap=50.0) == "loop"
    register(kernel="flex")
    try:
        assert kernel_for("cpu") == "flex"
        register()  # other callers (reference model, teacher, eval) keep the run's choice
        assert varlen_kernels.selected() == "flex"
    finally:
        register(kernel="auto")


def _examples(vocab: int, lengths: list[int]) -> list[Rendered]:
    g = torch.Generator().manual_seed(0)
    return [Rendered(torch.randint(1, vocab, (n,), generator=g).tolist(), [1] * n, "x") for n in lengths]


@pytest.mark.parametrize("arch", factory.ARCHS)
def test_model_forward_with_flex_equals_loop(arch, tmp_path):
    """Every family through the registered attention: Gemma 2 soft-caps, Gemma 2/3 slide a
    16-token window over 23- and 40-token examples, Llama/Qwen use GQA."""
    model = factory.build_model(tmp_path, arch, vocab_size=97).eval()
    batch = collate(_examples(97, [23, 5, 40, 2, 31]))
    with torch.no_grad():
        model.set_attn_implementation(register())
        want, _ = token_loss(model, batch, chunk_size=64)
        register(kernel="flex")
        try:
            got, _ = token_loss(model, batch, chunk_size=64)
        finally:
            register(kernel="auto")
    assert {"flex@cpu", "loop@cpu"} <= set(varlen_kernels.kernels_ran())
    assert abs(got.item() - want.item()) <= 1e-5 * abs(want.item())


def test_pair_rows_with_flex_equal_loop():
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = factory.model_config("mistral", 64)
    config.sliding_window = 4
    model = AutoModelForCausalLM.from_config(config).eval()
    model.set_attn_implementation(register())
    items = [
        PairItem([3, 4, 5, 6, 7], [8, 9, 10], [11, 12, 13, 14, 15, 16], "x:1"),
        PairItem([5], [6, 7], [9], "x:2"),
    ]
    batch = collate_pairs(items)
    with torch.no_grad():
        want = pair_hidden(model, batch)
        register(kernel="flex")
        try:
            got = pair_hidden(model, batch)
        finally:
            register(kernel="auto")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_config_checks_the_kernel(tmp_path):
    base = {"model": str(tmp_path), "data": {"train": "x.jsonl"}, "output_dir": str(tmp_path / "o")}
    assert load_config(base).model.attention_kernel == "auto"
    validate(load_config({**base, "model": {"path": str(tmp_path), "attention_kernel": "flex"}}))
    with pytest.raises(
        ConfigError, match="'model.attention_kernel' = 'flexx' is not one of .* Did you mean 'flex'"
    ):
        load_config({**base, "model": {"path": str(tmp_path), "attention_kernel": "flexx"}})
    with pytest.raises(ConfigError, match="needs model.attn_implementation: auto"):
        validate(
            load_config(
                {
                    **base,
                    "model": {
                        "path": str(tmp_path),
                        "attention_kernel": "flex",
                        "attn_implementation": "sdpa",
                    },
                }
            )
        )
