"""Distillation divergences between a teacher and a student next-token distribution.

Every divergence takes *log-probabilities* over one shared support, ``[N, K]`` each (rows sum
to 1 in probability space), and returns the per-row value ``[N]``:

- forward KL ``KL(p‖q) = Σ_i p_i (log p_i − log q_i)`` — teacher ``p``, student ``q``; mode
  covering (the student spreads mass wherever the teacher has some), Hinton et al. 2015.
- reverse KL ``KL(q‖p) = Σ_i q_i (log q_i − log p_i)`` — mode seeking (MiniLLM, Gu et al. 2024).
- generalised Jensen–Shannon (GKD, Agarwal et al. 2024, eq. 2) with ``m = β p + (1 − β) q``:
  ``JSD_β(p‖q) = β KL(p‖m) + (1 − β) KL(q‖m)``. Near the ends it vanishes like
  ``JSD_β ≈ β KL(p‖q)`` (β→0) and ``≈ (1 − β) KL(q‖p)`` (β→1); at exactly β = 0 / β = 1 it is
  taken to be forward / reverse KL, as in GKD's reference implementation (TRL).

The support is either the full vocabulary (``K = V``: :func:`tempered_log_probs` of both
models' logits) or a teacher's top-k tokens plus one "tail" bucket holding the rest of the
mass (``K = k + 1``: :func:`topk_with_tail` for the teacher, :func:`gather_with_tail` for the
student). The bucketed divergence is the exact divergence between the two distributions
coarsened to those k + 1 outcomes, hence a lower bound of the full one (data-processing
inequality) that is tight when the teacher's tail is small.

:func:`distill_loss` combines a divergence at temperature ``T`` (multiplied by ``T²`` so its
gradients keep their scale as T changes, Hinton et al. 2015 §2) with the cross-entropy on the
data's labels: ``loss_i = alpha · CE_i + (1 − alpha) · T² · D_i``.
"""

from __future__ import annotations

import math

import torch

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")

# Smallest tail mass represented: log(1e-30) ≈ −69 stays finite in float32, so 0 · log 0 never
# turns into NaN (the bucket's contribution p·log(p/q) at p = 1e-30 is ~1e-28, i.e. zero).
_TAIL_FLOOR = 1e-30


def tempered_log_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``log_softmax(logits / T)`` in float32. ``logits [N, V]`` -> ``[N, V]``."""
    z = logits.float()
    if temperature != 1.0:
        z = z / temperature
    return torch.log_softmax(z, dim=-1)


def with_tail(top_logp: torch.Tensor) -> torch.Tensor:
    """Append the log of the remaining mass ``1 − Σ exp(top_logp)`` as a last column.

    ``top_logp [N, k]`` (log-probs of k distinct outcomes) -> ``[N, k + 1]``. The tail is
    floored at 1e-30 so it stays finite when the k outcomes hold (numerically) all the mass.
    """
    covered = torch.logsumexp(top_logp, dim=-1, keepdim=True).clamp(max=0.0)
    # log(1 − e^c) = log(−expm1(c)); expm1 is accurate for c near 0 (tail near 1) too.
    tail = torch.log((-torch.expm1(covered)).clamp(min=_TAIL_FLOOR))
    return torch.cat([top_logp, tail], dim=-1)


def topk_with_tail(logp: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's k most likely tokens and its coarsened distribution.

    ``logp [N, V]`` -> ``(ids [N, k] long, sorted by decreasing probability,
    logp_k [N, k + 1])``.
    """
    k = min(k, logp.shape[-1])
    top, ids = torch.topk(logp, k, dim=-1)
    return ids, with_tail(top)


def gather_with_tail(logp: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The student's distribution coarsened to the teacher's top-k ``ids`` + tail.

    ``logp [N, V]``, ``ids [N, k]`` -> ``[N, k + 1]`` (differentiable in ``logp``).
    """
    return with_tail(logp.gather(-1, ids))


def forward_kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """``KL(teacher ‖ student)`` per row: ``Σ p (log p − log q)``; ``[N, K]`` x2 -> ``[N]``."""
    return (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)


def reverse_kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """``KL(student ‖ teacher)`` per row: ``Σ q (log q − log p)``; ``[N, K]`` x2 -> ``[N]``."""
    return (student_logp.exp() * (student_logp - teacher_logp)).sum(-1)


def generalized_jsd(student_logp: torch.Tensor, teacher_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """``JSD_β = β KL(p‖m) + (1 − β) KL(q‖m)``, ``m = β p + (1 − β) q`` (GKD eq. 2) per row.

    β = 0 and β = 1 return forward and reverse KL (the limits of ``JSD_β / β`` and
    ``JSD_β / (1 − β)``). ``[N, K]`` x2 -> ``[N]``.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if beta == 0.0:
        return forward_kl(student_logp, teacher_logp)
    if beta == 1.0:
        return reverse_kl(student_logp, teacher_logp)
    # log m = logsumexp(log β + log p, log(1 − β) + log q), computed without leaving log space.
    log_m = torch.logaddexp(teacher_logp + math.log(beta), student_logp + math.log1p(-beta))
    kl_teacher = (teacher_logp.exp() * (teacher_logp - log_m)).sum(-1)
    kl_student = (student_logp.exp() * (student_logp - log_m)).sum(-1)
    return beta * kl_teacher + (1.0 - beta) * kl_student


def divergence(
    kind: str, student_logp: torch.Tensor, teacher_logp: torch.Tensor, beta: float = 0.5
) -> torch.Tensor:
    """The divergence named ``kind`` (one of :data:`DIVERGENCES`) per row, ``[N]``."""
    if student_logp.shape != teacher_logp.shape:
        raise ValueError(
            f"student and teacher supports differ: {tuple(student_logp.shape)} vs {tuple(teacher_logp.shape)}"
        )
    if kind == "forward_kl":
        return forward_kl(student_logp, teacher_logp)
    if kind == "reverse_kl":
        return reverse_kl(student_logp, teacher_logp)
    if kind == "jsd":
        return generalized_jsd(student_logp, teacher_logp, beta)
    raise ValueError(f"unknown divergence {kind!r}; known: {', '.join(DIVERGENCES)}")


def distill_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor | None,
    *,
    teacher_logits: torch.Tensor | None = None,
    teacher_topk: tuple[torch.Tensor, torch.Tensor] | None = None,
    alpha: float = 0.5,
    temperature: float = 1.0,
    kind: str = "forward_kl",
    beta: float = 0.5,
):
    """Summed distillation loss over N positions -> ``(loss_sum, metrics)``.

    Args:
        student_logits: ``[N, V]`` student logits (with grad).
        targets: ``[N]`` label token ids, or None where there are no labels (student samples
            in on-policy distillation): the CE term is then left out.
        teacher_logits: ``[N, V]`` teacher logits (full-vocabulary divergence), or
        teacher_topk: ``(ids [N, k], logp [N, k])``: the teacher's top-k log-probs already at
            temperature ``T`` (a cache); the divergence is then over the k tokens + tail.
        alpha: CE weight; the divergence gets ``1 − alpha``.
    Returns:
        ``loss_sum = Σ_i alpha·CE_i + (1 − alpha)·T²·D_i`` (0-d float32) and summed metrics
        ``{"ce": Σ CE_i, "divergence": Σ T²·D_i, "agree": #(argmax student == argmax teacher),
        "n": N}``.
    """
    if (teacher_logits is None) == (teacher_topk is None):
        raise ValueError("give exactly one of teacher_logits and teacher_topk")
    student_logp = tempered_log_probs(student_logits, temperature)
    if teacher_logits is not None:
        if teacher_logits.shape != student_logits.shape:
            raise ValueError(
                f"teacher logits {tuple(teacher_logits.shape)} and student logits "
                f"{tuple(student_logits.shape)} differ in shape"
            )
        teacher_logp = tempered_log_probs(teacher_logits.detach(), temperature)
        teacher_top1 = teacher_logits.argmax(-1)
    else:
        ids, top_logp = teacher_topk
        ids = ids.long()
        teacher_logp = with_tail(top_logp.float().detach())
        student_logp = gather_with_tail(student_logp, ids)
        teacher_top1 = ids[:, 0]
    div = divergence(kind, student_logp, teacher_logp, beta) * (temperature**2)
    loss = (1.0 - alpha) * div.sum()
    ce_sum = student_logits.new_zeros((), dtype=torch.float32)
    if targets is not None:
        z = student_logits.float()
        ce = torch.logsumexp(z, dim=-1) - z.gather(-1, targets[:, None].long())[:, 0]
        ce_sum = ce.sum()
        loss = loss + alpha * ce_sum
    agree = (student_logits.detach().argmax(-1) == teacher_top1).sum()
    return loss, {
        "ce": ce_sum.detach(),
        "divergence": div.detach().sum(),
        "agree": agree,
        "n": int(student_logits.shape[0]),
    }
