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
mixed batch, a plain ``nn.Linear`` base without ``fan_in_fan_out``, input and weights of one
dtype and no autocast. Anything else takes PEFT's forward unchanged.
"""

from __future__ import annotations

import torch
from peft.tuners.lora.layer import Linear as PeftLoraLinear
from torch import nn

from .forward import profile_scope


class _LoraLinearFunction(torch.autograd.Function):
    """``(x [..., in], x_d [..., in] | None, W [out, in], b [out] | None, A [r, in], B [out, r],
    s) -> y [..., out]``; ``x_d`` None means the adapter reads ``x`` itself."""

    @staticmethod
    def forward(ctx, x, x_d, weight, bias, lora_a, lora_b, scaling):
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        xd2 = x2 if x_d is None else x_d.reshape(-1, x_d.shape[-1])
        h = xd2 @ lora_a.t()
        with profile_scope("base"):
            y = torch.addmm(bias, x2, weight.t()) if bias is not None else x2 @ weight.t()
        y.addmm_(h, lora_b.t(), alpha=scaling)
        ctx.save_for_backward(x2, None if x_d is None else xd2, h, weight, lora_a, lora_b)
        ctx.scaling, ctx.lead, ctx.has_bias, ctx.shared = scaling, lead, bias is not None, x_d is None
        return y.view(*lead, y.shape[-1])

    @staticmethod
    def backward(ctx, grad_y):
        x2, xd2, h, weight, lora_a, lora_b = ctx.saved_tensors
        need_x, need_xd, need_w, need_b, need_a, need_bb, _ = ctx.needs_input_grad
        s, lead = ctx.scaling, ctx.lead
        g = grad_y.reshape(-1, grad_y.shape[-1])
        xd2 = x2 if xd2 is None else xd2
        g_h = torch.mm(g, lora_b).mul_(s) if (need_a or (ctx.shared and need_x) or need_xd) else None
        g_a = torch.mm(g_h.t(), xd2) if need_a else None
        g_lb = torch.mm(g.t(), h).mul_(s) if need_bb else None
        g_x = g_xd = None
        if need_x:
            with profile_scope("base"):
                g_x = torch.mm(g, weight)
            if ctx.shared:
                g_x.addmm_(g_h, lora_a)  # the adapter read x itself: one gradient for both
        if need_xd:
            g_xd = torch.mm(g_h, lora_a).view(*lead, -1)
        with profile_scope("base"):
            g_w = torch.mm(g.t(), x2) if need_w else None
        g_bias = g.sum(0) if (ctx.has_bias and need_b) else None
        g_x = g_x.view(*lead, -1) if g_x is not None else None
        return g_x, g_xd, g_w, g_bias, g_a, g_lb, None


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
    if x.dtype != weight.dtype or base.weight.dtype != weight.dtype:
        return None
    if x.device.type != "meta" and torch.is_autocast_enabled(x.device.type):
        return None  # (the memory estimator traces on the meta device, which has no autocast)
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
        return _LoraLinearFunction.apply(
            x,
            x_d,
            base.weight,
            base.bias,
            self.lora_A[name].weight,
            self.lora_B[name].weight,
            self.scaling[name],
        )


def register_fused(lora_config) -> None:
    """Have PEFT build :class:`FusedLoraLinear` for plain ``nn.Linear`` targets of ``lora_config``
    (PEFT's custom-module mapping; quantised linears subclass ``nn.Linear`` and are left to
    PEFT's own dispatch by the caller, which registers this only when the model has none)."""
    lora_config._register_custom_module({nn.Linear: FusedLoraLinear})
