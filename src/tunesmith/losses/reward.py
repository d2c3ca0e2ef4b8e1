"""The Bradley–Terry loss for scalar reward models (pure function over rewards)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .preference import pairwise_correct


def bradley_terry_loss(
    reward_chosen: torch.Tensor, reward_rejected: torch.Tensor, margin: torch.Tensor | None = None
):
    """``−log σ(r_c − r_r − m)`` summed over pairs (``[B]`` each) -> ``(loss_sum, metrics)``.

    The Bradley–Terry model of pairwise preference (Ouyang et al. 2022, eq. 1); the optional
    per-pair ``margin`` m (Touvron et al. 2023, Llama 2, eq. 2) asks for a larger reward gap on
    pairs rated as clearly different. Metrics (sums): ``correct`` (r_c > r_r, ties one half: the
    pairwise accuracy), ``margin`` (r_c − r_r), ``rewards_chosen``, ``rewards_rejected``.
    """
    diff = reward_chosen - reward_rejected
    target = diff - margin if margin is not None else diff
    loss = -F.logsigmoid(target).sum()
    diff = diff.detach()
    return loss, {
        "correct": pairwise_correct(reward_chosen.detach(), reward_rejected.detach()),
        "margin": diff.sum(),
        "rewards_chosen": reward_chosen.detach().sum(),
        "rewards_rejected": reward_rejected.detach().sum(),
    }
