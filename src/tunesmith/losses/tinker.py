"""The built-in losses of Thinking Machines' Tinker training API, as Tinker defines them.

Every loss is a function of per-token tensors of one shape ``S`` — ``[N]`` for one datum of N
target positions, or ``[B, N]`` for B datums padded to N, or (``cross_entropy`` only)
``[N, K]`` top-K targets: ``target_logprobs`` (``log p_θ`` of each ``target_tokens`` entry under
the model being trained, with grad; :func:`.logprobs.linear_token_logprobs` computes them) and
the datum's ``loss_fn_inputs`` tensors. It returns ``(loss, metrics)``: ``loss`` is the
0-d float32 **sum** over every token (Tinker reduces by sum, never by mean: "for all
objectives we sum the token-level losses over the sequence length", losses.mdx), and
``metrics`` holds detached 0-d tensors keyed the way the SDK folds metrics across request
chunks (``name:reduction``; ``tinker/lib/chunked_fwdbwd_helpers.py``), at least ``loss:sum``.

Notation: ``lp`` = ``target_logprobs`` (log p_θ, the learner), ``q`` = ``loss_fn_inputs["logprobs"]``
(log q, the sampler's log-probs recorded at sampling time), ``A`` = ``advantages``,
``w`` = ``weights``, ``ρ = exp(lp − q)``. Sources — the Tinker docs, whose page text is also
``docs/losses.mdx`` of github.com/thinking-machines-lab/tinker-cookbook:

- ``cross_entropy`` (https://tinker-docs.thinkingmachines.ai/tinker/losses/cross-entropy):
  ``loss = −Σ w · lp``. Inputs ``target_tokens``, ``weights`` of shape ``(N,)`` or ``(N, K)``
  (top-K distillation: K candidate tokens per position with weights, e.g. the teacher's
  renormalised probabilities).
- ``importance_sampling`` (…/tinker/losses/importance-sampling): ``loss = −Σ ρ · A``.
- ``ppo`` (…/tinker/losses/ppo): ``loss = −Σ min(ρ · A, clip(ρ, lo, hi) · A)`` with
  ``lo = 1 − ε_low``, ``hi = 1 + ε_high``, "ε currently fixed to 0.2", i.e. ``lo = 0.8``,
  ``hi = 1.2`` by default; ``loss_fn_config={"clip_low_threshold", "clip_high_threshold"}``
  sets them (losses.mdx's example: 0.9 / 1.1). The thresholds are ratios, not ε's.
- ``cispo`` (…/tinker/losses/cispo): ``loss = −Σ sg(clip(ρ, lo, hi)) · lp · A`` — the clipped
  ratio is a constant coefficient (stop-gradient), so no token's gradient is ever zeroed, only
  scaled. Default ``lo = 0.0``, ``hi = 4.0`` ("CISPO defaults to disabling the lower bound and
  only capping the upper side (clip_low_threshold=0.0, clip_high_threshold=4.0)"), configurable
  by the same two ``loss_fn_config`` keys.
- ``dro`` (…/tinker/losses/dro; Richemond et al. 2024): ``loss = −Σ (lp · A − ½ β (lp − q)²)``,
  ``loss_fn_config={"beta": …}``.

The RL losses (all but ``cross_entropy``) read ``target_tokens``, ``logprobs`` and
``advantages`` only; ``weights``, when a client sends them (the docs' RL example does), play no
part in the documented formulas and are ignored here too. Clients mask prompt positions
through the advantages instead: the cookbook pads ``advantages`` (and ``logprobs``) with 0 there,
which zeroes those tokens' loss and gradient in ``importance_sampling``, ``ppo`` and ``cispo``.

Undocumented details, and the reading taken here:

- ``dro``'s default β: the docs give only the example ``{"beta": 0.05}``; 0.05 is the default.
  Note that the quadratic term, as documented, also covers positions whose advantage is 0, so
  prompt positions padded with ``logprobs = 0`` pull ``lp`` towards 0 there; that is Tinker's
  formula and is kept (a client avoids it by sending the real prompt log-probs, or no prompt).
- Per-token thresholds: the SDK declares ``clip_low_threshold`` / ``clip_high_threshold`` as
  float32 ``loss_fn_inputs`` keys too (``tinker/types/datum.py``). :func:`tinker_loss` takes
  them from the datum when present (tensor of shape S), else from ``loss_fn_config``, else the
  default above.
- Unknown ``loss_fn_config`` keys, missing inputs and mismatched shapes are refused with a
  ``ValueError`` that names them, rather than ignored.
- Extra metrics beyond ``loss:sum``: ``ppo`` and ``cispo`` report ``clipped_low:sum`` /
  ``clipped_high:sum``, numbers of tokens whose ratio fell below / above the thresholds (for
  ``ppo`` only where the clip binds, i.e. cuts the gradient); sums, so they add up across
  request chunks like ``loss:sum``.
- ``mask`` (not a Tinker input): 1 where a position exists, 0 on padding the *server* adds
  when it stacks datums of different lengths; padded positions contribute nothing and their
  (possibly garbage) log-probs never reach an ``exp``.

``gspo``, ``stable_reinforce`` and ``custom`` (also in the SDK's ``LossFnType``) are not
implemented here. The ratios ``ρ`` are computed in float64 so a token with ``lp − q`` up to
~700 stays finite (float32 overflows past e^88 and 0 · inf would turn a zero-advantage token
into NaN); the returned loss is float32.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

LOSS_FNS = ("cross_entropy", "importance_sampling", "ppo", "cispo", "dro")

PPO_CLIP = (0.8, 1.2)  # 1 ∓ ε with ε "currently fixed to 0.2 in Tinker" (ppo page)
CISPO_CLIP = (0.0, 4.0)  # "clip_low_threshold=0.0, clip_high_threshold=4.0" (cispo page)
DRO_BETA = 0.05  # the docs' only example value; no default is documented

Threshold = float | torch.Tensor

# The loss_fn_inputs each loss reads (besides target_tokens, which only selects lp) and the
# loss_fn_config keys it accepts.
_INPUTS = {
    "cross_entropy": ("weights",),
    "importance_sampling": ("logprobs", "advantages"),
    "ppo": ("logprobs", "advantages"),
    "cispo": ("logprobs", "advantages"),
    "dro": ("logprobs", "advantages"),
}
_CONFIG = {
    "cross_entropy": (),
    "importance_sampling": (),
    "ppo": ("clip_low_threshold", "clip_high_threshold"),
    "cispo": ("clip_low_threshold", "clip_high_threshold"),
    "dro": ("beta",),
}


def _check(target_logprobs: torch.Tensor, mask: torch.Tensor | None, **tensors: torch.Tensor) -> None:
    shape = tuple(target_logprobs.shape)
    for name, t in {**tensors, **({"mask": mask} if mask is not None else {})}.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, target_logprobs {shape}: they must match")


def _masked_sum(per_token: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is not None:
        per_token = torch.where(mask.bool(), per_token, torch.zeros_like(per_token))
    return per_token.sum().float()


def _ratio(lp: torch.Tensor, q: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``exp(lp − q)`` in float64; 1 on masked positions (the where comes before the exp, so a
    padded position's garbage never overflows, and its gradient is exactly 0)."""
    log_ratio = lp.double() - q.double()
    if mask is not None:
        log_ratio = torch.where(mask.bool(), log_ratio, torch.zeros_like(log_ratio))
    return torch.exp(log_ratio)


def _clip_counts(ratio, adv, lo: Threshold, hi: Threshold, mask, *, binding_only: bool) -> dict:
    """Numbers of tokens whose ratio left ``[lo, hi]`` below / above; with ``binding_only``
    (PPO) only those where the clip binds: ρ < lo with A < 0, ρ > hi with A > 0."""
    with torch.no_grad():
        r = ratio.detach()
        low, high = r < lo, r > hi
        if binding_only:
            low, high = low & (adv < 0), high & (adv > 0)
        if mask is not None:
            low, high = low & mask.bool(), high & mask.bool()
        return {"clipped_low:sum": low.sum().float(), "clipped_high:sum": high.sum().float()}


def cross_entropy_loss(
    target_logprobs: torch.Tensor, weights: torch.Tensor, *, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict]:
    """``−Σ weights · target_logprobs`` (a weighted NLL *sum*, not a mean).

    ``target_logprobs``, ``weights``: shape ``[N]``, ``[B, N]`` or ``[N, K]`` (top-K targets).
    Returns ``(loss, {"loss:sum": loss})``; ``∂loss/∂lp = −weights``.
    """
    _check(target_logprobs, mask, weights=weights)
    per_token = -(target_logprobs.float() * weights.float())
    loss = _masked_sum(per_token, mask)
    return loss, {"loss:sum": loss.detach()}


def importance_sampling_loss(
    target_logprobs: torch.Tensor,
    sampling_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """``−Σ exp(lp − q) · A``: REINFORCE corrected for the sampler/learner mismatch.

    All tensors of one shape (``[N]`` or ``[B, N]``); ``sampling_logprobs`` is the datum's
    ``logprobs`` input. ``∂loss/∂lp = −ρ · A``: at ρ = 1 (on-policy) the policy gradient.
    """
    _check(target_logprobs, mask, logprobs=sampling_logprobs, advantages=advantages)
    ratio = _ratio(target_logprobs, sampling_logprobs, mask)
    loss = _masked_sum(-(ratio * advantages.double()), mask)
    return loss, {"loss:sum": loss.detach()}


def ppo_loss(
    target_logprobs: torch.Tensor,
    sampling_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    *,
    clip_low_threshold: Threshold = PPO_CLIP[0],
    clip_high_threshold: Threshold = PPO_CLIP[1],
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """``−Σ min(ρ · A, clip(ρ, lo, hi) · A)``, token by token (PPO's clipped surrogate).

    Thresholds are ratios (default 0.8 and 1.2), floats or tensors of the inputs' shape. Where
    the clip binds (ρ > hi with A > 0, ρ < lo with A < 0) the token's loss is the constant
    ``−clip · A`` and its gradient is 0; elsewhere ``∂loss/∂lp = −ρ · A``. Metrics add
    ``clipped_low:sum`` / ``clipped_high:sum``, the numbers of such tokens.
    """
    _check(target_logprobs, mask, logprobs=sampling_logprobs, advantages=advantages)
    lo, hi = _thresholds(clip_low_threshold, clip_high_threshold)
    ratio = _ratio(target_logprobs, sampling_logprobs, mask)
    adv = advantages.double()
    objective = torch.minimum(ratio * adv, torch.clamp(ratio, lo, hi) * adv)
    loss = _masked_sum(-objective, mask)
    clipped = _clip_counts(ratio, adv, lo, hi, mask, binding_only=True)
    return loss, {"loss:sum": loss.detach(), **clipped}


def cispo_loss(
    target_logprobs: torch.Tensor,
    sampling_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    *,
    clip_low_threshold: Threshold = CISPO_CLIP[0],
    clip_high_threshold: Threshold = CISPO_CLIP[1],
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """``−Σ sg(clip(ρ, lo, hi)) · lp · A`` (CISPO: the clipped ratio is a detached coefficient).

    Defaults lo = 0, hi = 4 (upper cap only). ``∂loss/∂lp = −clip(ρ, lo, hi) · A`` for every
    token — clipping bounds the coefficient, it never zeroes a gradient. Metrics add
    ``clipped_low:sum`` / ``clipped_high:sum``: tokens whose coefficient was raised to lo /
    capped at hi (whatever the advantage's sign).
    """
    _check(target_logprobs, mask, logprobs=sampling_logprobs, advantages=advantages)
    lo, hi = _thresholds(clip_low_threshold, clip_high_threshold)
    ratio = _ratio(target_logprobs.detach(), sampling_logprobs, mask)
    coefficient = torch.clamp(ratio, lo, hi)
    adv = advantages.double()
    lp = target_logprobs.double()
    if mask is not None:  # a padded position's lp may be -inf; keep 0 · -inf out of the sum
        lp = torch.where(mask.bool(), lp, torch.zeros_like(lp))
    loss = _masked_sum(-(coefficient * lp * adv), mask)
    clipped = _clip_counts(ratio, adv, lo, hi, mask, binding_only=False)
    return loss, {"loss:sum": loss.detach(), **clipped}


def dro_loss(
    target_logprobs: torch.Tensor,
    sampling_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    *,
    beta: float = DRO_BETA,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """``−Σ (lp · A − ½ β (lp − q)²)`` (direct reward optimisation's quadratic-penalty form).

    ``∂loss/∂lp = −A + β (lp − q)``. ``beta >= 0`` (default 0.05, see the module docstring).
    """
    _check(target_logprobs, mask, logprobs=sampling_logprobs, advantages=advantages)
    beta = float(beta)
    if not beta >= 0.0:
        raise ValueError(f"dro beta must be >= 0, got {beta}")
    lp, q, adv = target_logprobs.double(), sampling_logprobs.double(), advantages.double()
    if mask is not None:
        keep = mask.bool()
        lp = torch.where(keep, lp, torch.zeros_like(lp))
        q = torch.where(keep, q, torch.zeros_like(q))
    objective = lp * adv - 0.5 * beta * (lp - q).square()
    loss = _masked_sum(-objective, mask)
    return loss, {"loss:sum": loss.detach()}


def _thresholds(lo: Threshold, hi: Threshold) -> tuple[Threshold, Threshold]:
    """Validate clip thresholds (floats or tensors) and give tensors float64 like the ratio."""
    if isinstance(lo, torch.Tensor) or isinstance(hi, torch.Tensor):
        lo_t = torch.as_tensor(lo, dtype=torch.float64)
        hi_t = torch.as_tensor(hi, dtype=torch.float64)
        if bool((lo_t > hi_t).any()) or bool((lo_t < 0).any()):
            raise ValueError("clip thresholds must satisfy 0 <= clip_low_threshold <= clip_high_threshold")
        return lo_t, hi_t
    lo, hi = float(lo), float(hi)
    if not 0.0 <= lo <= hi:
        raise ValueError(
            f"clip thresholds must satisfy 0 <= clip_low_threshold <= clip_high_threshold, got {lo} and {hi}"
        )
    return lo, hi


def tinker_loss(
    loss_fn: str,
    target_logprobs: torch.Tensor,
    loss_fn_inputs: Mapping[str, torch.Tensor],
    loss_fn_config: Mapping[str, float | str] | None = None,
    *,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """Dispatch a ``forward_backward`` request's ``loss_fn`` / ``loss_fn_inputs`` / ``loss_fn_config``.

    ``loss_fn_inputs`` maps the Datum's keys to tensors of ``target_logprobs``' shape (extra
    keys, e.g. ``target_tokens`` or a leftover ``mask``, are ignored). Raises ``ValueError``
    naming the problem for an unknown loss, a missing input, a shape mismatch or a config key
    the loss does not take.
    """
    if loss_fn not in _INPUTS:
        raise ValueError(f"unknown loss_fn {loss_fn!r}; supported: {', '.join(LOSS_FNS)}")
    missing = [k for k in _INPUTS[loss_fn] if k not in loss_fn_inputs]
    if missing:
        raise ValueError(f"loss_fn {loss_fn!r} needs loss_fn_inputs {', '.join(missing)}")
    config = dict(loss_fn_config or {})
    unknown = sorted(set(config) - set(_CONFIG[loss_fn]))
    if unknown:
        takes = ", ".join(_CONFIG[loss_fn]) or "none"
        raise ValueError(
            f"loss_fn {loss_fn!r} does not take loss_fn_config {', '.join(unknown)} (takes: {takes})"
        )
    for key, value in config.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"loss_fn_config {key} must be a number, got {value!r}")
    if loss_fn == "cross_entropy":
        return cross_entropy_loss(target_logprobs, loss_fn_inputs["weights"], mask=mask)
    args = (target_logprobs, loss_fn_inputs["logprobs"], loss_fn_inputs["advantages"])
    if loss_fn == "importance_sampling":
        return importance_sampling_loss(*args, mask=mask)
    if loss_fn == "dro":
        return dro_loss(*args, beta=config.get("beta", DRO_BETA), mask=mask)
    default_lo, default_hi = PPO_CLIP if loss_fn == "ppo" else CISPO_CLIP
    thresholds = {}
    for key, default in (("clip_low_threshold", default_lo), ("clip_high_threshold", default_hi)):
        value = loss_fn_inputs.get(key)
        if value is not None:
            _check(target_logprobs, None, **{key: value})
        thresholds[key] = value if value is not None else config.get(key, default)
    fn = ppo_loss if loss_fn == "ppo" else cispo_loss
    return fn(*args, **thresholds, mask=mask)
