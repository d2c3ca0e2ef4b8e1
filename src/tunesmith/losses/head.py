"""The model's output head transform: LM-head outputs -> logits, with the family's scale and soft-cap.

For raw head outputs ``u = h Wᵀ + b`` the logits are ``z = c · tanh(s · u / c)`` (soft-cap ``c``:
Gemma 2/3's ``final_logit_softcapping``; scale ``s``: Cohere's ``logit_scale``, Granite's
``1 / logits_scaling``), or ``z = s · u`` without a cap. Every place that turns hidden states
into logits — the fused chunked CE and log-prob kernels, wrapped heads, GRPO rollout scoring,
distillation — goes through :class:`LogitTransform`, and the fused kernels take its derivative
``∂z/∂u = s · (1 − (z/c)²)`` from here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LogitTransform:
    """``u -> z``: scale by ``scale``, then soft-cap at ``softcap`` (None: no cap). Logits are fp32."""

    scale: float = 1.0
    softcap: float | None = None

    @classmethod
    def of(cls, config) -> LogitTransform:
        """The transform a Hugging Face model config declares (identity for most families)."""
        scale = float(getattr(config, "logit_scale", None) or 1.0)
        if getattr(config, "logits_scaling", None):
            scale /= float(config.logits_scaling)
        return cls(scale, getattr(config, "final_logit_softcapping", None))

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, V]`` fp32 from head outputs ``u [N, V]`` (any dtype); differentiable."""
        z = u.float()
        if self.scale != 1.0:
            z = z * self.scale
        return self._cap(z)

    def linear(self, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Logits ``[n, V]`` fp32 of ``h [n, H]`` under a plain linear head (``weight [V, H]``,
        ``bias [V]`` or None), scaled in place: the fused kernels' one chunk, never under autograd."""
        z = (h @ weight.t()).float()
        if bias is not None:
            z += bias.float()
        if self.scale != 1.0:
            z *= self.scale
        return self._cap(z)

    def _cap(self, z: torch.Tensor) -> torch.Tensor:
        if self.softcap is None:
            return z
        return torch.tanh(z / self.softcap) * self.softcap

    def cap_slope(self, z: torch.Tensor) -> torch.Tensor | None:
        """``∂z/∂(s·u) = 1 − (z/c)²`` ``[n, V]`` at logits ``z`` (None without a cap). Take it
        before ``z`` is overwritten: the fused kernels turn ``z`` into the softmax in place."""
        if self.softcap is None:
            return None
        return 1.0 - (z / self.softcap).square_()

    def to_head_grad_(self, g: torch.Tensor, slope: torch.Tensor | None) -> torch.Tensor:
        """``∂ℓ/∂u`` from ``g = ∂ℓ/∂z`` (``slope`` from :meth:`cap_slope`), in place on ``g``."""
        if slope is not None:
            g *= slope
        if self.scale != 1.0:
            g *= self.scale
        return g


IDENTITY = LogitTransform()


class LinearHeadGrads:
    """Gradients of a linear head's inputs (``hidden [N, H]``, ``weight [V, H]``, ``bias [V]``),
    accumulated chunk by chunk from ``g = ∂ℓ/∂u`` (:meth:`LogitTransform.to_head_grad_`), for
    the inputs ``need`` = (hidden, weight, bias) flags ask for; the others stay None. Weight and
    bias gradients are summed in fp32."""

    def __init__(self, hidden, weight, bias, need: tuple[bool, bool, bool]):
        need_h, need_w, need_b = need
        self.hidden = torch.empty_like(hidden) if need_h else None
        self.weight = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        self.bias = torch.zeros_like(bias, dtype=torch.float32) if need_b else None

    @property
    def needed(self) -> bool:
        return any(t is not None for t in (self.hidden, self.weight, self.bias))

    def add(self, start: int, g: torch.Tensor, h: torch.Tensor, weight: torch.Tensor) -> None:
        """Add chunk ``h = hidden[start : start + n]``'s share, ``g [n, V]`` in hidden's dtype."""
        if self.hidden is not None:
            self.hidden[start : start + g.shape[0]] = g @ weight
        if self.weight is not None:
            self.weight += (g.t() @ h).float()
        if self.bias is not None:
            self.bias += g.float().sum(0)
