"""Next-token selection for one sequence: logit processors, temperature, nucleus sampling, logprobs.

Pure tensor functions (no model, no threads) so they can be tested with hand-made logits. The
order follows the OpenAI API's documented semantics and common practice (vLLM, HF):

1. ``logit_bias``: ``z[t] += bias[t]`` for the listed token ids.
2. presence / frequency penalties (OpenAI "Parameter details"):
   ``z[t] -= count[t] * frequency_penalty + (count[t] > 0) * presence_penalty``
   where ``count[t]`` is how often ``t`` was generated so far in this completion.
3. temperature below :data:`GREEDY_BELOW` (1e-5, 0 included) -> argmax (greedy); otherwise
   ``softmax(z / T)``, restricted to the nucleus:
   the smallest set of most likely tokens whose mass reaches ``top_p`` (Holtzman et al. 2020,
   "The Curious Case of Neural Text Degeneration", sec. 3.1), renormalised, then one draw with
   the sequence's own ``torch.Generator`` (so a seeded request does not depend on its neighbours).

Numerics: ``softmax(z / T)`` is computed in float64 from ``(z - max z) / T``, so every exponent is
``<= 0`` and the largest is exactly 0: no finite temperature can overflow it into inf/nan (a tiny
``T`` only sends the other exponents to ``-inf``, i.e. probability 0). The greedy floor is
therefore a definition, not a workaround: below ``1e-5`` the distribution is one-hot on the
argmax for any logit gap above ~1e-3 anyway, and argmax needs no random generator. Logits that
are not finite where it matters (NaN, or no finite maximum) raise :class:`BadLogits`, which the
scheduler turns into an error for that one request.

Reported log-probabilities are ``log_softmax`` of the model's raw logits (before bias, penalties,
temperature and top-p), the model's own belief, as vLLM reports them by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

GREEDY_BELOW = 1e-5
"""Temperatures below this (0 included) select the argmax; documented in docs/serving.md."""


class BadLogits(ValueError):
    """The logits of one sequence cannot be turned into a distribution (NaN / no finite max)."""


def is_greedy(params: SamplingParams) -> bool:
    """Whether ``params`` select the argmax (no random draw, no generator needed)."""
    return params.temperature < GREEDY_BELOW


@dataclass
class SamplingParams:
    """Per-sequence decoding settings (validated by the HTTP layer)."""

    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    top_logprobs: int | None = None  # None: no logprobs; k >= 0: chosen token + k alternatives


@dataclass
class Choice:
    """One selected token with (optionally) its log-probability and the top-k alternatives."""

    token: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None


def process_logits(logits: torch.Tensor, params: SamplingParams, counts: dict[int, int]) -> torch.Tensor:
    """Apply logit_bias and presence/frequency penalties. ``logits``: [V] float32 -> [V] (new tensor)."""
    z = logits.clone()
    if params.logit_bias:
        ids = torch.tensor(list(params.logit_bias), dtype=torch.long)
        z[ids] += torch.tensor(list(params.logit_bias.values()), dtype=z.dtype)
    if counts and (params.presence_penalty or params.frequency_penalty):
        ids = torch.tensor(list(counts), dtype=torch.long)
        c = torch.tensor(list(counts.values()), dtype=z.dtype)
        z[ids] -= c * params.frequency_penalty + (c > 0).to(z.dtype) * params.presence_penalty
    return z


def nucleus_probs(z: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Sampling distribution [V]: softmax(z / T) with the tail beyond the top-p nucleus zeroed.

    A token is kept when the mass of the tokens ranked strictly above it is below ``top_p``, so
    the most likely token is always kept and the kept set is the smallest reaching ``top_p``.
    Returns float64, finite and summing to 1 for any finite ``temperature > 0`` and logits with a
    finite maximum (``-inf`` entries are fine): the max-shift keeps every exponent ``<= 0``.
    """
    z = z.double()
    probs = torch.softmax((z - z.max()) / temperature, dim=-1)
    if top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(descending=True)
    mass_above = sorted_p.cumsum(-1) - sorted_p
    sorted_p = torch.where(mass_above < top_p, sorted_p, torch.zeros_like(sorted_p))
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return kept / kept.sum()


def select(
    logits: torch.Tensor, params: SamplingParams, counts: dict[int, int], generator: torch.Generator | None
) -> Choice:
    """Pick the next token from ``logits`` ([V], any float dtype) for one sequence.

    Raises :class:`BadLogits` when the processed logits have no finite maximum or contain NaN."""
    raw = logits.float()
    z = process_logits(raw, params, counts)
    peak = z.max()  # NaN anywhere makes the max NaN
    if not torch.isfinite(peak):
        raise BadLogits(f"the logits have no finite maximum or contain NaN (max {float(peak)})")
    if is_greedy(params):
        token = int(z.argmax())
    else:
        probs = nucleus_probs(z, params.temperature, params.top_p)
        token = int(torch.multinomial(probs, 1, generator=generator))
    if params.top_logprobs is None:
        return Choice(token)
    logp = torch.log_softmax(raw, dim=-1)
    top = None
    if params.top_logprobs > 0:
        values, ids = logp.topk(params.top_logprobs)
        top = [(int(i), float(v)) for i, v in zip(ids, values)]
    return Choice(token, float(logp[token]), top)
