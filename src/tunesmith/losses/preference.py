"""Pairwise preference losses (the DPO family), pure functions of sequence log-probabilities.

Every pair loss ``N_loss(pair, *, beta, …)`` takes a :class:`PairLogps` (per-pair tensors
``[B]``) and the ``preference.*`` values its registry entry lists
(:data:`tunesmith.config.registry.LOSSES`); :func:`kto_loss` takes unpaired examples. Each
returns ``(loss_sum, metrics)``: the *sum* of the per-pair losses (the engine divides by the
number of pairs in the accumulation window) and summed metrics — ``correct`` (pairs whose chosen reward beats the rejected one, a tie
counting one half, so that an untrained policy — equal rewards — scores the chance level 0.5;
logged as ``accuracy``), ``margin`` (chosen − rejected reward), ``rewards_chosen`` / ``rewards_rejected``
and ``logps_chosen`` / ``logps_rejected`` (summed sequence log-probabilities of the policy).

Notation: ``π_c, π_r`` policy log-probabilities of the chosen / rejected answer (sums over the
answer's tokens), ``ρ_c, ρ_r`` the reference model's, ``h = (π_c − ρ_c) − (π_r − ρ_r)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PairLogps:
    """One batch of pairs, each field ``[B]``: the policy's summed log-probabilities of the chosen
    and rejected answers, the reference model's (None for losses without one), and the answers'
    lengths in tokens."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None
    chosen_tokens: torch.Tensor | None = None
    rejected_tokens: torch.Tensor | None = None

    def log_ratios(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(π_c − ρ_c, π_r − ρ_r)``."""
        return self.chosen - self.ref_chosen, self.rejected - self.ref_rejected


def pairwise_correct(better: torch.Tensor, worse: torch.Tensor) -> torch.Tensor:
    """Summed pairwise accuracy: 1 where ``better > worse``, 0.5 on ties, else 0."""
    return (better > worse).float().sum() + 0.5 * (better == worse).float().sum()


def _metrics(
    reward_c: torch.Tensor, reward_r: torch.Tensor, logp_c: torch.Tensor, logp_r: torch.Tensor
) -> dict:
    reward_c, reward_r = reward_c.detach(), reward_r.detach()
    return {
        "correct": pairwise_correct(reward_c, reward_r),
        "margin": (reward_c - reward_r).sum(),
        "rewards_chosen": reward_c.sum(),
        "rewards_rejected": reward_r.sum(),
        "logps_chosen": logp_c.detach().sum(),
        "logps_rejected": logp_r.detach().sum(),
    }


def _with_reference(losses: torch.Tensor, p: PairLogps, beta: float):
    """``(loss_sum, metrics)`` of a reference-model loss: rewards are ``β(π − ρ)``."""
    ratio_c, ratio_r = p.log_ratios()
    return losses.sum(), _metrics(beta * ratio_c, beta * ratio_r, p.chosen, p.rejected)


def _h(p: PairLogps) -> torch.Tensor:
    ratio_c, ratio_r = p.log_ratios()
    return ratio_c - ratio_r


def sigmoid_loss(p: PairLogps, *, beta: float, label_smoothing: float = 0.0):
    """DPO, Rafailov et al. 2023, eq. 7: ``−log σ(βh)``; with ``label_smoothing`` ε > 0 it is
    conservative DPO (Mitchell 2023): ``−(1−ε) log σ(βh) − ε log σ(−βh)``."""
    h = _h(p)
    losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    return _with_reference(losses, p, beta)


def robust_loss(p: PairLogps, *, beta: float, label_smoothing: float = 0.0):
    """rDPO, Chowdhury et al. 2024, eq. 8, unbiased under preference-flip rate ε:
    ``[−(1−ε) log σ(βh) + ε log σ(−βh)] / (1 − 2ε)``."""
    h = _h(p)
    losses = (-(1 - label_smoothing) * F.logsigmoid(beta * h) + label_smoothing * F.logsigmoid(-beta * h)) / (
        1 - 2 * label_smoothing
    )
    return _with_reference(losses, p, beta)


def ipo_loss(p: PairLogps, *, beta: float, length_normalize: bool = False):
    """IPO, Azar et al. 2023, eq. 17: ``(h − 1/(2β))²`` (β is τ there).

    ``length_normalize``: divide each log-ratio by its answer's length first (TRL's IPO),
    ``h = (π_c − ρ_c)/|y_c| − (π_r − ρ_r)/|y_r|``; the rewards are then ``β(π − ρ)/|y|``.
    """
    ratio_c, ratio_r = p.log_ratios()
    if length_normalize:
        ratio_c, ratio_r = ratio_c / p.chosen_tokens, ratio_r / p.rejected_tokens
    losses = (ratio_c - ratio_r - 1 / (2 * beta)) ** 2
    return losses.sum(), _metrics(beta * ratio_c, beta * ratio_r, p.chosen, p.rejected)


def hinge_loss(p: PairLogps, *, beta: float):
    """SLiC-HF, Zhao et al. 2023, eq. 2 with δ = 1/β: ``max(0, 1 − βh)``."""
    return _with_reference(torch.relu(1 - beta * _h(p)), p, beta)


def apo_zero_loss(p: PairLogps, *, beta: float):
    """APO-zero, D'Oosterlinck et al. 2024 ("Anchored Preference Optimization"), eq. 7:
    ``(1 − σ(β(π_c − ρ_c))) + σ(β(π_r − ρ_r))``.

    Unlike DPO's, the two log-ratios are anchored separately, to 0: the chosen answer's
    likelihood is pushed up and the rejected one's down even when their difference ``h`` is
    already large (for chosen answers better than what the model writes now)."""
    ratio_c, ratio_r = p.log_ratios()
    losses = 1 - torch.sigmoid(beta * ratio_c) + torch.sigmoid(beta * ratio_r)
    return _with_reference(losses, p, beta)


def simpo_loss(p: PairLogps, *, beta: float, gamma: float):
    """SimPO (Meng et al. 2024, eq. 6), reference-free and length-normalised:

    ``−log σ(β π_c/|y_c| − β π_r/|y_r| − γ)``; rewards are ``β π/|y|``.
    """
    reward_c = beta * p.chosen / p.chosen_tokens
    reward_r = beta * p.rejected / p.rejected_tokens
    losses = -F.logsigmoid(reward_c - reward_r - gamma)
    return losses.sum(), _metrics(reward_c, reward_r, p.chosen, p.rejected)


def log_odds(mean_logp: torch.Tensor) -> torch.Tensor:
    """``log(p / (1 − p))`` for ``p = exp(mean_logp)``, i.e. ``ℓ − log(1 − e^ℓ)``.

    ``log(1 − e^ℓ)`` is computed as Mächler's log1mexp (2012): ``log(−expm1(ℓ))`` for
    ``ℓ > −ln 2`` and ``log1p(−exp(ℓ))`` below. ``log1p(−exp(ℓ))`` alone cancels in float32 as ℓ
    approaches 0 (a confident model's mean token log-probability): at ℓ = −1e-3 its gradient was
    off by ~3 %. ℓ is clamped just below 0 because ℓ = 0 (p = 1) has infinite odds.
    """
    mean_logp = mean_logp.clamp(max=-1e-6)
    near_zero = mean_logp > -math.log(2.0)
    log_1m_p = torch.where(near_zero, torch.log(-torch.expm1(mean_logp)), torch.log1p(-torch.exp(mean_logp)))
    return mean_logp - log_1m_p


def orpo_loss(p: PairLogps, *, beta: float):
    """ORPO (Hong et al. 2024, eqs. 2–7), reference-free with the SFT term included:

    ``L = −π_c/|y_c|  +  β · (−log σ(log odds(y_c) − log odds(y_r)))`` where
    ``odds(y) = P(y)/(1 − P(y))`` and ``P(y) = exp(π/|y|)`` (length-normalised likelihood);
    β is the paper's λ. Rewards are ``β π/|y|`` (as TRL logs them). Extra metrics:
    ``nll`` (the SFT term) and ``log_odds_ratio``.
    """
    mean_c, mean_r = p.chosen / p.chosen_tokens, p.rejected / p.rejected_tokens
    ratio = log_odds(mean_c) - log_odds(mean_r)
    nll = -mean_c
    losses = nll - beta * F.logsigmoid(ratio)
    metrics = _metrics(beta * mean_c, beta * mean_r, p.chosen, p.rejected)
    metrics.update(nll=nll.detach().sum(), log_odds_ratio=ratio.detach().sum())
    return losses.sum(), metrics


def kto_loss(
    policy: torch.Tensor,
    ref: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
):
    """KTO (Ethayarajh et al. 2024, eq. 8) on unpaired examples.

    ``r = π − ρ`` per example (``[B]``), ``z₀ = max(0, kl)`` the reference point (a detached
    scalar estimate of KL(π‖ρ), see the method), and
    desirable: ``λ_D (1 − σ(β(r − z₀)))``, undesirable: ``λ_U (1 − σ(β(z₀ − r)))``.
    ``desirable`` is a ``[B]`` bool mask. Metrics: ``correct`` counts desirable examples with
    ``r > z₀`` and undesirable ones with ``r < z₀`` (ties: one half); ``rewards_desirable`` /
    ``rewards_undesirable`` sum ``βr`` by label with counts ``n_desirable`` / ``n_undesirable``.
    """
    z0 = kl.detach().clamp(min=0)
    r = policy - ref
    d = desirable.to(r.dtype)
    weights = desirable_weight * d + undesirable_weight * (1 - d)
    margin = torch.where(desirable, r - z0, z0 - r)
    losses = weights * (1 - torch.sigmoid(beta * margin))
    rewards = (beta * r).detach()
    metrics = {
        "correct": pairwise_correct(margin.detach(), torch.zeros_like(margin)),
        "rewards_desirable": (rewards * d).sum(),
        "rewards_undesirable": (rewards * (1 - d)).sum(),
        "n_desirable": d.sum(),
        "n_undesirable": (1 - d).sum(),
        "logps": policy.detach().sum(),
    }
    return losses.sum(), metrics
