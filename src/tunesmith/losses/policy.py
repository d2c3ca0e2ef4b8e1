"""GRPO policy loss: group-normalised advantages, the clipped surrogate and the k3 KL penalty.

Notation (DeepSeekMath, Shao et al. 2024, §4.1, eq. 3): for a prompt q the current policy
samples a group of G completions o_1..o_G with scalar rewards r_1..r_G. Every token t of o_i
gets the same advantage

    Â_i = (r_i − mean(r)) / (std(r) + eps)                                    (outcome supervision)

and the per-token objective is the PPO clipped surrogate (Schulman et al. 2017, eq. 7) minus a
KL penalty to the reference policy:

    ρ_t   = π_θ(o_t | q, o_<t) / π_old(o_t | q, o_<t)
    J_t   = min(ρ_t Â, clip(ρ_t, 1 − ε_low, 1 + ε_high) Â) − β · KL_t
    KL_t  = π_ref/π_θ − log(π_ref/π_θ) − 1        (the "k3" estimator, Schulman 2020; DeepSeekMath eq. 4)

which is unbiased for KL(π_θ ‖ π_ref) under samples from π_θ and never negative. The loss is
ℓ_t = −J_t. ``ε_high > ε_low`` is DAPO's "clip-higher" (Yu et al. 2025, §3.1).

How token losses become one number per completion (``normalization``):

- ``"sequence"`` — GRPO as published: the mean over the completion's tokens,
  (1/|o_i|) Σ_t ℓ_t; the caller then averages over completions.
- ``"constant"`` — Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training", §3.1):
  the token *sum* divided by a constant (the generation budget ``max_tokens``), which removes
  the length bias of the per-sequence mean (long wrong answers are penalised less per token).
  Dr. GRPO pairs it with ``scale=False`` in :func:`group_advantages` (no std division).

Everything here is a pure function of tensors; shapes are given per function.
"""

from __future__ import annotations

from typing import Literal

import torch

Normalization = Literal["sequence", "constant"]


def group_advantages(rewards: torch.Tensor, *, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """Group-normalised advantages ``[P, G]`` from rewards ``[P, G]`` (P prompts × G samples).

    ``Â = (r − mean_g r)`` and, with ``scale``, divided by ``std_g r + eps`` (the unbiased,
    n − 1 standard deviation of the group, as TRL's GRPOTrainer). A group whose rewards are all
    equal gets advantages 0: it carries no learning signal. Needs ``G >= 2``.
    """
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [prompts, group >= 2], got {tuple(rewards.shape)}")
    rewards = rewards.float()
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if not scale:
        return centred
    return centred / (rewards.std(dim=1, keepdim=True) + eps)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π_θ ‖ π_ref): ``exp(d) − d − 1`` with ``d = ref_logp − logp``.

    Same shape as the inputs; >= 0 everywhere, 0 where the two log-probs agree. Its gradient
    with respect to ``logp`` is ``1 − exp(d)``: positive (pushes ``logp`` down) where the policy
    puts more mass on the token than the reference.
    """
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    ref_logp: torch.Tensor | None = None,
    normalization: Normalization = "sequence",
    max_tokens: int | None = None,
) -> tuple[torch.Tensor, dict]:
    """The summed GRPO loss of N completions and its metrics.

    Args:
        logp: ``[N, L]`` log π_θ of each sampled token (with grad), padded to L.
        old_logp: ``[N, L]`` log π_old of the same tokens (the sampling policy; no grad). At the
            first optimisation pass on a rollout this is ``logp.detach()``: ρ = 1 but the
            gradient is ``Â ∇log π_θ``, the policy gradient. Later passes on the same rollout
            (GRPO's μ > 1) keep that first value while π_θ moves, so ρ departs from 1 and the
            clip acts.
        advantages: ``[N]`` one advantage per completion (broadcast over its tokens).
        mask: ``[N, L]`` 1 for real completion tokens, 0 for padding.
        epsilon_low / epsilon_high: clip range ``[1 − ε_low, 1 + ε_high]`` (high defaults to low).
        beta: weight of the k3 KL penalty; needs ``ref_logp [N, L]`` when > 0.
        ref_logp: reference log-probs; when given, the KL is measured (and reported) even
            with ``beta == 0``.
        normalization: ``"sequence"`` (mean over each completion's tokens) or ``"constant"``
            (token sum / ``max_tokens``), see the module docstring.

    Returns ``(loss_sum, metrics)``: ``loss_sum`` is a 0-d tensor, the **sum over completions**
    of each completion's normalised loss (the caller divides by N, the number of completions);
    metrics are sums: ``completion_tokens``, ``clipped_low`` / ``clipped_high`` (tokens whose
    clip is active, i.e. the gradient is cut: ρ < 1 − ε_low with Â < 0, ρ > 1 + ε_high with
    Â > 0), ``ratio`` (Σ over tokens of ρ) and ``kl`` (Σ over tokens of k3, when ``ref_logp``
    is given).
    """
    if logp.shape != old_logp.shape or logp.shape != mask.shape or advantages.shape != logp.shape[:1]:
        raise ValueError(
            f"shape mismatch: logp {tuple(logp.shape)}, old_logp {tuple(old_logp.shape)}, "
            f"mask {tuple(mask.shape)}, advantages {tuple(advantages.shape)}"
        )
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp")
    if normalization == "constant" and not max_tokens:
        raise ValueError("normalization='constant' needs max_tokens")
    eps_high = epsilon_low if epsilon_high is None else epsilon_high
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype)[:, None]
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + eps_high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    metrics: dict = {}
    if ref_logp is not None:
        kl = k3_kl(logp, ref_logp)
        if beta > 0:
            per_token = per_token + beta * kl
        metrics["kl"] = (kl.detach() * mask).sum()
    token_sums = (per_token * mask).sum(dim=1)
    lengths = mask.sum(dim=1)
    if normalization == "sequence":
        per_completion = token_sums / lengths.clamp(min=1.0)
    elif normalization == "constant":
        per_completion = token_sums / float(max_tokens)
    else:
        raise ValueError(f"unknown normalization {normalization!r}")
    with torch.no_grad():
        r = ratio.detach()
        low = (r < 1.0 - epsilon_low) & (adv < 0)
        high = (r > 1.0 + eps_high) & (adv > 0)
        metrics["clipped_low"] = (low.to(mask.dtype) * mask).sum()
        metrics["clipped_high"] = (high.to(mask.dtype) * mask).sum()
        metrics["ratio"] = (r * mask).sum()
        metrics["completion_tokens"] = lengths.sum()
    return per_completion.sum(), metrics
