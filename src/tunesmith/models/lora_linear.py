"""A faster forward and backward for PEFT's LoRA linear layer.

PEFT computes ``y = base(x) + lora_B(lora_A(dropout(x))) * scaling`` as five autograd ops: two
thin matmuls, a multiply and an add over the whole ``[N, out]`` output, and in backward the
same again plus an add of the two input gradients. :class:`FusedLoraLinear` is PEFT's own
``lora.Linear`` (same parameters, state-dict keys, merging and saving — an adapter it trains is
an ordinary PEFT adapter) whose forward, on its common path, runs one autograd function:

- forward: ``h = x_d Aᵀ`` (``[N, r]``), ``y = x Wᵀ + b``, then ``y += s · h Bᵀ`` accumulated
  by the GEMM itself (``addmm_``: no separate scale or add pass over ``y``);
- backward, for ``g = ∂L/∂y``: ``g_h = s · g B`` (``[N, r]``), ``∂B = s · gᵀ h``,
  ``∂A = g_hᵀ x_d``, ``∂x = g W`` with ``g_h A`` accumulated into it by the GEMM (or given to
  the dropout branch separately when dropout is active); ``∂W``, ``∂b`` only when they train.

``x_d`` is ``dropout(x)`` — ``x`` itself when dropout is off. The common path is: adapters on,
not merged, one active vanilla LoRA adapter (no DoRA or other variant), no ``adapter_names``
mixed batch, a plain ``nn.Linear`` base without ``fan_in_fan_out``, and either input and weights
of one dtype, or autocast on (bf16 / fp16 training, CUDA or CPU). Anything else takes PEFT's
forward unchanged.

Under autocast (bf16 / fp16 training) the same function runs the base GEMMs in autocast's
dtype, as autocast would run them (the frozen base is usually stored in that dtype already,
``models.device.frozen_base_dtype``), and the adapter and the output in fp32. PEFT's autocast forward is five half-precision ops, each a cast and a pass over memory,
and its sum rounds the adapter's small delta to the half type.
"""

from __future__ import annotations

import torch
from peft.tuners.lora.layer import Linear as PeftLoraLinear
from torch import nn

from .device import autocast_dtype
from .forward import profile_scope


class _LoraLinearFunction(torch.autograd.Function):
    """``(x [..., in], x_d [..., in] | None, W [out, in], b [out] | None, A [r, in], B [out, r],
    s, half, acc) -> y [..., out]`` in ``acc``; ``x_d`` None means the adapter reads ``x`` itself.

    The base GEMMs (``x Wᵀ + b``, ``∂x = g W``, ``∂W`` when it trains) run in ``half``; the
    adapter (``h = x_d Aᵀ``, ``s · h Bᵀ``, their gradients) and the sum run in ``acc``. Without
    autocast both are the operands' one dtype and every cast below is a no-op. Under autocast
    ``half`` is autocast's dtype and ``acc`` fp32, so the adapter's delta — early in training far
    below one half-precision step of ``x Wᵀ`` — is not rounded away (all-bf16 LoRA, PEFT's
    autocast forward, trained SmolLM2 visibly slower at equal steps: bench/README.md, "bf16 on a
    CPU")."""

    @staticmethod
    def forward(ctx, x, x_d, weight, bias, lora_a, lora_b, scaling, half, acc):
        need_w = ctx.needs_input_grad[2]
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        xa = x2.to(acc)
        xda = xa if x_d is None else x_d.reshape(-1, x_d.shape[-1]).to(acc)
        a, b = lora_a.to(acc), lora_b.to(acc)
        h = xda @ a.t()
        xh, wh = x2.to(half), weight.to(half)
        with profile_scope("base"):
            y = torch.addmm(bias.to(half), xh, wh.t()) if bias is not None else xh @ wh.t()
        y = y.to(acc)
        y.addmm_(h, b.t(), alpha=scaling)
        ctx.save_for_backward(xa, None if x_d is None else xda, h, wh, a, b, xh if need_w else None)
        ctx.scaling, ctx.lead, ctx.shared, ctx.half, ctx.acc = scaling, lead, x_d is None, half, acc
        ctx.dtypes = (
            x.dtype,
            None if x_d is None else x_d.dtype,
            weight.dtype,
            bias.dtype if bias is not None else None,
        )
        return y.view(*lead, y.shape[-1])

    @staticmethod
    def backward(ctx, grad_y):
        with torch.autocast(grad_y.device.type, enabled=False):  # a backward run under autocast
            return _LoraLinearFunction._backward(ctx, grad_y)

    @staticmethod
    def _backward(ctx, grad_y):
        xa, xda, h, wh, a, b, xh = ctx.saved_tensors
        need_x, need_xd, need_w, need_b, need_a, need_bb, _, _, _ = ctx.needs_input_grad
        s, lead = ctx.scaling, ctx.lead
        x_dtype, xd_dtype, w_dtype, b_dtype = ctx.dtypes
        g = grad_y.reshape(-1, grad_y.shape[-1]).to(ctx.acc)
        xda = xa if xda is None else xda
        g_h = torch.mm(g, b).mul_(s) if (need_a or (ctx.shared and need_x) or need_xd) else None
        g_a = torch.mm(g_h.t(), xda) if need_a else None
        g_lb = torch.mm(g.t(), h).mul_(s) if need_bb else None
        gh = g.to(ctx.half) if (need_x or need_w) else None
        g_x = g_xd = g_w = None
        if need_x:
            with profile_scope("base"):
                g_x = torch.mm(gh, wh).to(ctx.acc)
            if ctx.shared:
                g_x.addmm_(g_h, a)  # the adapter read x itself: one gradient for both
            g_x = g_x.to(x_dtype).view(*lead, -1)
        if need_xd:
            g_xd = torch.mm(g_h, a).to(xd_dtype).view(*lead, -1)
        if need_w:
            with profile_scope("base"):
                g_w = torch.mm(gh.t(), xh).to(w_dtype)
        g_bias = g.sum(0).to(b_dtype) if need_b else None
        return g_x, g_xd, g_w, g_bias, g_a, g_lb, None, None, None


def _fast_adapter(layer: PeftLoraLinear, x: torch.Tensor, kwargs: dict) -> str | None:
    """The active adapter's name when ``layer``'s forward may take the fused path, else None."""
    if kwargs or layer.disable_adapters or layer.merged or layer.fan_in_fan_out:
        return None
    active = layer.active_adapters
    if len(active) != 1 or active[0] not in layer.lora_A or active[0] in layer.lora_variant:
        return None
    name = active[0]
    base = layer.get_base_layer()
    if type(base) is not nn.Linear or getattr(layer, "lora_bias", {}).get(name):
        return None
    weight = layer.lora_A[name].weight
    half = autocast_dtype(x)
    if half is not None:  # every operand is cast to autocast's dtype
        dtypes = {x.dtype, weight.dtype, base.weight.dtype, layer.lora_B[name].weight.dtype}
        return name if dtypes <= {torch.float32, half} else None
    if x.dtype != weight.dtype or base.weight.dtype != weight.dtype:
        return None
    return name


class FusedLoraLinear(PeftLoraLinear):
    """PEFT's LoRA ``Linear`` with the fused forward/backward of this module on its common path."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        name = _fast_adapter(self, x, kwargs) if not args else None
        if name is None:
            return super().forward(x, *args, **kwargs)
        base = self.get_base_layer()
        dropout = self.lora_dropout[name]
        x_d = (
            None if isinstance(dropout, nn.Identity) or not (self.training and dropout.p > 0) else dropout(x)
        )
        operands = (x, x_d, base.weight, base.bias, self.lora_A[name].weight, self.lora_B[name].weight)
        half = autocast_dtype(x)
        if half is None:  # one dtype throughout
            return _LoraLinearFunction.apply(*operands, self.scaling[name], x.dtype, x.dtype)
        # Autocast stays out of the function's own matmuls: it casts what it needs itself.
        with torch.autocast(x.device.type, enabled=False):
            return _LoraLinearFunction.apply(*operands, self.scaling[name], half, torch.float32)


def register_fused(lora_config) -> None:
    """Have PEFT build :class:`FusedLoraLinear` for plain ``nn.Linear`` targets of ``lora_config``
    (PEFT's custom-module mapping; quantised linears subclass ``nn.Linear`` and are left to
    PEFT's own dispatch by the caller, which registers this only when the model has none)."""
    lora_config._register_custom_module({nn.Linear: FusedLoraLinear})
