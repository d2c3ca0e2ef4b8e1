"""tunesmith's fused LoRA linear (models/lora_linear.py) against PEFT's own layer: the same
outputs and gradients for every input that takes the fused path, PEFT's forward for the rest,
and the same parameters and adapter files."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from torch import nn

from tunesmith.models.lora_linear import FusedLoraLinear, register_fused


class _Net(nn.Module):
    def __init__(self, bias: bool):
        super().__init__()
        self.up = nn.Linear(12, 20, bias=bias)
        self.down = nn.Linear(20, 12, bias=bias)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


def _pair(bias=False, dropout=0.0, rslora=False, train_base=False):
    """(PEFT's model, the fused model) with identical weights (non-zero B, so the adapter counts)."""
    models = []
    for fused in (False, True):
        torch.manual_seed(0)
        cfg = LoraConfig(
            r=4,
            lora_alpha=6,  # scaling 1.5: not a power of two, so rounding differences would show
            lora_dropout=dropout,
            target_modules=["up", "down"],
            init_lora_weights=False,
            use_rslora=rslora,
        )
        if fused:
            register_fused(cfg)
        model = get_peft_model(_Net(bias), cfg)
        if train_base:
            for name, p in model.named_parameters():
                if "base_layer" in name:
                    p.requires_grad_(True)
        models.append(model)
    return models


def _run(model, x, seed=1):
    torch.manual_seed(seed)
    x = x.clone().requires_grad_(True)
    y = model(x)
    (y * torch.linspace(-1, 1, y.shape[-1])).square().sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return y.detach(), x.grad, grads


def _graph_names(t: torch.Tensor) -> list[str]:
    """The autograd node types that produced ``t``."""
    names, todo, seen = [], [t.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        todo.extend(f for f, _ in node.next_functions)
    return names


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "options",
    [{}, {"bias": True}, {"rslora": True}, {"train_base": True, "bias": True}, {"dropout": 0.3}],
    ids=["plain", "bias", "rslora", "base-trains", "dropout"],
)
def test_fused_layer_matches_peft_outputs_and_gradients(options):
    peft_model, fused_model = _pair(**options)
    assert type(fused_model.base_model.model.up) is FusedLoraLinear
    assert type(peft_model.base_model.model.up) is not FusedLoraLinear
    x = torch.randn(3, 7, 12)  # [batch, time, in]: leading dimensions are kept
    y_ref, gx_ref, g_ref = _run(peft_model, x)
    y, gx, g = _run(fused_model, x)
    _close(y, y_ref)
    _close(gx, gx_ref)
    assert g.keys() == g_ref.keys() and len(g) >= 4
    for name in g:
        _close(g[name], g_ref[name])


def test_fused_layer_is_bitwise_equal_to_peft_with_a_power_of_two_scale():
    # r 4, alpha 8: scaling 2 is exact, and the GEMM accumulates what PEFT adds separately.
    models = []
    for fused in (False, True):
        torch.manual_seed(0)
        cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["up", "down"], init_lora_weights=False)
        if fused:
            register_fused(cfg)
        models.append(get_peft_model(_Net(False), cfg))
    x = torch.randn(5, 12)
    ref, out = _run(models[0], x), _run(models[1], x)
    assert torch.equal(ref[0], out[0])


def test_paths_the_fused_forward_leaves_to_peft():
    peft_model, fused_model = _pair()
    x = torch.randn(4, 12)
    with fused_model.disable_adapter(), peft_model.disable_adapter():
        _close(fused_model(x), peft_model(x))
    fused_model.eval()
    peft_model.eval()
    with torch.no_grad():
        _close(fused_model(x), peft_model(x))
    fused_model.merge_adapter()
    peft_model.merge_adapter()
    with torch.no_grad():
        _close(fused_model(x), peft_model(x))


@pytest.mark.parametrize("half_base", [False, True], ids=["fp32-base", "bf16-base"])
def test_fused_layer_under_autocast(half_base):
    """bf16 autocast (CPU here; CUDA takes the same path): the fused function runs, returns
    fp32, gives fp32 gradients to the fp32 adapter, and agrees with the fp32 computation to
    bf16 precision of the base GEMMs. ``half_base``: the frozen base stored in bf16, as
    ``models.device.frozen_base_dtype`` loads it for LoRA under autocast."""
    peft_model, fused_model = _pair(bias=True)
    x = torch.randn(3, 7, 12)
    ref = _run(peft_model, x)  # fp32, no autocast: the reference
    if half_base:
        for name, p in fused_model.named_parameters():
            if "base_layer" in name:
                p.data = p.data.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fused_model(x.clone().requires_grad_(True))
        assert y.dtype == torch.float32
        assert _graph_names(y).count("_LoraLinearFunctionBackward") == 2  # both layers
        y, gx, g = _run(fused_model, x)
    torch.testing.assert_close(y, ref[0], rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(gx, ref[1], rtol=3e-2, atol=3e-2)
    assert g.keys() == ref[2].keys()
    for key, grad in g.items():
        assert grad.dtype == torch.float32, key
        torch.testing.assert_close(grad, ref[2][key], rtol=5e-2, atol=5e-2, msg=key)


def test_autocast_keeps_a_small_adapter_delta_that_bf16_rounds_away():
    """Early in training s·(x Aᵀ)Bᵀ is far below one bf16 step of x Wᵀ. The fused layer adds it
    in fp32: its output minus the base's is the delta to fp32 precision, where PEFT's all-bf16
    autocast forward rounds most of it away."""
    peft_model, fused_model = _pair()
    with torch.no_grad():
        for model in (peft_model, fused_model):
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.mul_(1e-4)
    layer = fused_model.base_model.model.up
    peft_layer = peft_model.base_model.model.up
    x = torch.randn(64, 12)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        with layer.disable_adapter() if hasattr(layer, "disable_adapter") else fused_model.disable_adapter():
            base = layer(x).float()
        delta = layer(x).float() - base
        peft_delta = peft_layer(x).float() - base
    with torch.no_grad():
        exact = (
            layer.scaling["default"]
            * (x @ layer.lora_A["default"].weight.t())
            @ layer.lora_B["default"].weight.t()
        )
    error = (delta - exact).norm() / exact.norm()
    peft_error = (peft_delta - exact).norm() / exact.norm()
    assert error < 1e-3 < 0.3 < peft_error


def test_adapter_files_are_peft_s():
    peft_model, fused_model = _pair(bias=True)
    ref, ours = get_peft_model_state_dict(peft_model), get_peft_model_state_dict(fused_model)
    assert ref.keys() == ours.keys()
    for key in ref:
        assert torch.equal(ref[key], ours[key])


def test_quantised_or_custom_linears_keep_peft_s_layer(tiny_model_dir):
    """attach_adapter registers the fused layer only when every linear is a plain nn.Linear:
    bitsandbytes' quantised layers subclass nn.Linear and need PEFT's own dispatch."""
    from transformers import AutoModelForCausalLM

    from tunesmith.config.schema import AdapterConfig
    from tunesmith.models.adapters import attach_adapter

    cfg = AdapterConfig(type="lora", r=4, alpha=8, targets=["q_proj"])
    plain = attach_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), cfg)
    assert all(type(m) is FusedLoraLinear for n, m in plain.named_modules() if n.endswith("q_proj"))

    class OtherLinear(nn.Linear):
        pass

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    mlp = model.model.layers[0].mlp
    old = mlp.up_proj
    mlp.up_proj = OtherLinear(old.in_features, old.out_features, bias=False)
    wrapped = attach_adapter(model, cfg)
    layers = [m for n, m in wrapped.named_modules() if n.endswith("q_proj")]
    assert layers and not any(type(m) is FusedLoraLinear for m in layers)
