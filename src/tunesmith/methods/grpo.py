"""Online RL with GRPO (``method: grpo``): sample, score, and push up what scored well.

Group Relative Policy Optimization (DeepSeekMath, Shao et al. 2024, §4.1): for every prompt
the current policy samples ``G = grpo.group_size`` completions, reward functions score them,
each completion's advantage is its reward normalised within its group, and the policy is
updated with the PPO-style clipped objective plus an optional k3 KL penalty towards the
reference — the base model with its adapters disabled, so no second copy is held (after an
earlier run, ``adapter.init_from``, a frozen copy of that adapter instead). The loss
itself is :func:`tunesmith.losses.policy.clipped_policy_loss`.

How it fits the one engine loop (methods/common.py protocol):

- an *item* is a prompt (:class:`PromptItem`), a *unit* one prompt, a micro-batch
  ``train.batch_size`` prompts; ``train.max_tokens_per_forward`` splits a micro-batch into
  passes of whole prompt groups (``item_tokens`` counts a prompt's whole group);
- ``loss_fn(model, batch)`` does the rollout itself: generation under ``no_grad`` in eval mode
  (:mod:`.grpo_rollout`), rewards, advantages, then the training-mode forward of the sampled
  completions and the policy loss. It returns the **sum over completions** of each
  completion's loss, and ``batch_count`` is the number of completions, so the engine's
  window normalisation gives the mean over the window's completions: GRPO's
  ``1/G Σ_i 1/|o_i| Σ_t`` with ``loss_normalization: sequence``, Dr. GRPO's
  ``1/G Σ_i 1/L_max Σ_t`` with ``constant`` (Liu et al. 2025). A per-token mean over the
  whole window (DAPO) would need the window's token count before its first backward, which
  is only known after sampling, so it is not offered;
- ``grpo.iterations`` = μ optimizer steps per rollout (DeepSeekMath Alg. 1; TRL's
  ``num_iterations``). With μ = 1 π_old is the policy that sampled, so the ratio is 1 and the
  clip is inactive, yet the gradient is the policy gradient ``Â ∇log π``. With μ > 1 the
  method sets ``MethodParts.batch_reuse = μ``, so the engine feeds each window of prompts to
  μ consecutive optimizer steps. The first use of a pass samples, scores and computes
  advantages as with μ = 1 and keeps the :class:`Rollout` (completions, advantages, reward
  metrics, π_old = the first use's detached log-probs, the reference log-probs) in
  :class:`RolloutCache`, keyed by the pass's prompts; uses 2..μ take it from there and only
  recompute π_θ, so ρ = π_θ/π_old departs from 1 and the clip (ε, ε_high) acts. The k3 KL is
  recomputed from π_θ on every use; the reference log-probs are not — the reference (the
  frozen base) does not move. Reward metrics of a reused rollout are repeated on every step
  that trains on it (``rollout_use`` tells 1 = fresh sample from 2..μ).

Sampling draws from the global torch RNG, which the engine checkpoints, so a run resumed
after a kill samples exactly what the uninterrupted run sampled. The rollout cache is not
checkpointed: validation requires ``train.save_every`` and ``train.max_steps`` to be multiples
of μ, so every checkpoint falls where the cache is empty (a new rollout starts), and a resumed
run equals the uninterrupted one. Evaluation samples held-out
prompts with a seed derived from the prompts themselves (the training RNG is left untouched),
so ``eval_reward`` at different steps compares the policies, not the sampling noise.
"""

from __future__ import annotations

import contextlib
import logging
import math
import zlib
from dataclasses import dataclass
from typing import Any

import torch

from ..config import RunConfig
from ..config.registry import METHODS
from ..data.formats import FORMAT_LABELS, Where, check_messages, iter_format_rows
from ..errors import DataError, ModelError
from ..losses.policy import clipped_policy_loss, group_advantages
from ..models.adapters import load_reference_adapter, reference_policy
from ..models.generate import format_prompt
from ..models.template import stop_token_ids
from ..rewards import Sample, build_rewards, required_fields
from .common import MethodParts, PreparedData, data_files, train_eval_split
from .grpo_rollout import completion_logprobs, sample_groups

log = logging.getLogger("tunesmith")


@dataclass
class PromptItem:
    """One prompt: its tokens (chat template + generation prompt applied), the prompt as
    written in the data, the example's other fields (for reward functions) and ``path:line``."""

    prompt_ids: list[int]
    prompt: Any
    extra: dict
    source: str


@dataclass
class PromptBatch:
    """The prompts of one forward pass. ``n_tokens`` starts as the prompt tokens of the whole
    group and ``loss_fn`` adds the sampled tokens (the engine reads it for throughput)."""

    items: list[PromptItem]
    group_size: int
    n_tokens: int = 0

    def to(self, device) -> PromptBatch:
        return self  # token tensors are built on the device during the rollout


def validate_config(config: RunConfig) -> None:
    """GRPO's checks beyond :func:`tunesmith.config.validate` (run by
    :func:`tunesmith.methods.validate`): each ``type: grader`` reward's grader is parsed and its
    judges found now (no model is loaded), so a bad grader is a ConfigError naming its field
    before any data or model is read."""
    from ..rewards.grader import resolve

    for i, r in enumerate(config.grpo.rewards):
        if r.type == "grader":
            resolve(r, f"grpo.rewards[{i}]")


# -- data ------------------------------------------------------------------------------------


def read_prompts(path: str, required: dict[str, str] | None = None) -> list[tuple[Any, dict, Where]]:
    """``(prompt, extra_fields, where)`` of every row of a prompt-only file.

    A prompt is a non-empty string or an OpenAI message list that does not end with an
    assistant turn. ``required`` maps example fields that reward functions read to the reward's
    name; a row without one is an error naming the file, line and field.
    """
    out = []
    for number, file_format, row in iter_format_rows(path):
        at = Where(str(path), number)
        if file_format not in METHODS["grpo"].formats:
            hint = (
                (
                    " (a 'completion' field makes a row prompt/completion data; name the reference "
                    "something else, e.g. 'answer')"
                )
                if "completion" in row
                else ""
            )
            raise at.error(
                f"this file looks like {FORMAT_LABELS[file_format]} data, judging by its "
                f"first row; {METHODS['grpo'].needs}{hint}"
            )
        prompt = row["prompt"]
        if isinstance(prompt, str):
            if not prompt.strip():
                raise at.error("prompt is empty", "prompt")
        elif isinstance(prompt, list):
            prompt = check_messages(prompt, "prompt", at)
            if prompt[-1]["role"] == "assistant":
                raise at.error(
                    "the prompt ends with an assistant message; the policy writes the assistant turn",
                    f"prompt[{len(prompt) - 1}].role",
                )
        else:
            raise at.error("prompt must be a string or an array of messages", "prompt")
        extra = {k: v for k, v in row.items() if k != "prompt"}
        for key, reward in (required or {}).items():
            if extra.get(key) is None:
                raise at.error(f"missing; the reward {reward} reads it", key)
        out.append((prompt, extra, at))
    return out


def _prompt_ids(tokenizer, prompt, at: Where) -> list[int]:
    try:
        text = format_prompt(tokenizer, prompt)
    except Exception as exc:  # jinja raise_exception() and friends
        raise at.error(f"the chat template rejected this prompt: {exc}", "prompt") from None
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if (
        not getattr(tokenizer, "chat_template", None)
        and tokenizer.bos_token_id is not None
        and getattr(tokenizer, "add_bos_token", False)
    ):
        ids = [tokenizer.bos_token_id] + ids
    return ids


def _to_items(rows, tokenizer, room: int) -> tuple[list[PromptItem], list[str]]:
    items, too_long = [], []
    for prompt, extra, at in rows:
        ids = _prompt_ids(tokenizer, prompt, at)
        if len(ids) > room:
            too_long.append(at.source)
            continue
        items.append(PromptItem(ids, prompt, extra, at.source))
    return items, too_long


def prepare_data(config: RunConfig, tokenizer) -> PreparedData:
    """Read, validate and tokenise the prompts; hold out ``data.eval_fraction`` if no eval file."""
    g, t = config.grpo, config.train
    required = required_fields(config.grpo.rewards)
    train_rows, eval_rows = train_eval_split(
        config, lambda paths: [r for p in paths for r in read_prompts(p, required)]
    )
    room = t.max_length - g.max_new_tokens
    train, too_long = _to_items(train_rows, tokenizer, room)
    evals, _ = _to_items(eval_rows, tokenizer, room)
    if too_long:
        log.warning(
            "data: %d prompts are longer than train.max_length - grpo.max_new_tokens = %d "
            "tokens and were dropped (e.g. %s)",
            len(too_long),
            room,
            ", ".join(too_long[:3]),
        )
    if not train:
        raise DataError(
            f"no usable prompt in {', '.join(data_files(config.data.train))}: every prompt was longer than "
            f"{room} tokens (raise train.max_length or lower grpo.max_new_tokens)"
        )
    log.info(
        "grpo: %d train / %d eval prompts, %d completions each, up to %d new tokens",
        len(train),
        len(evals),
        g.group_size,
        g.max_new_tokens,
    )
    tokens = sum(len(i.prompt_ids) for i in train)
    stats = {
        "train": {
            "examples": len(train_rows),
            "kept": len(train),
            "dropped_too_long": len(too_long),
            "tokens": tokens,
            "target_tokens": 0,
        },
        "eval": {"examples": len(eval_rows), "kept": len(evals)},
        "train_rows": len(train),
        "train_sequences": len(train),
        "eval_sequences": len(evals),
    }
    return PreparedData(
        train, evals, [[i] for i in range(len(train))], [[i] for i in range(len(evals))], stats
    )


# -- the step ----------------------------------------------------------------------------------


def _eval_rng(items: list[PromptItem], seed: int, device: torch.device):
    """A forked RNG seeded from the prompts, so evaluation neither disturbs nor depends on the
    training RNG stream."""
    key = zlib.crc32(repr([i.prompt_ids for i in items]).encode()) ^ (seed * 2654435761 % 2**32)
    stack = contextlib.ExitStack()
    stack.enter_context(torch.random.fork_rng(devices=[device] if device.type == "cuda" else []))
    torch.manual_seed(key)
    return stack


@dataclass
class Rollout:
    """One pass's sampled completions and what is computed from them once.

    ``rows[i]`` / ``completions[i]``: prompt and sampled tokens of completion ``i`` (prompt-major,
    ``G`` per prompt); ``advantages [N]``; ``reward_metrics`` / ``per_function``: the reward
    sums the pass logs; ``old_logp [N, L]``: log π_old, the first use's detached log-probs;
    ``ref_logp [N, L]``: the reference's (None without adapters); ``uses``: loss passes so far.
    """

    rows: list[list[int]]
    completions: list[list[int]]
    advantages: torch.Tensor
    reward_metrics: dict
    per_function: dict
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    uses: int = 1


class RolloutCache:
    """Rollouts awaiting their next use (``grpo.iterations`` = μ > 1), keyed by the pass's
    prompts: the ``path:line`` of each, in order (unique per data row, unlike the prompt text).

    The engine (``batch_reuse = μ``) feeds a window's passes unchanged to μ consecutive steps,
    so each entry is taken μ − 1 times after it was made and then dropped: the cache holds at
    most one window's rollouts and is empty whenever a new window starts (step % μ == 0), the
    only steps a checkpoint may fall on. (A window holding the same pass twice, possible only
    when the data set fits in fewer micro-batches than a step takes, trains on each rollout
    twice within a step instead of in two steps; each is still used μ times and the cache is
    still empty at every window boundary.)
    """

    def __init__(self, uses: int):
        self.uses = uses
        self._entries: dict[tuple, Rollout] = {}

    def take(self, key: tuple) -> Rollout | None:
        """The cached rollout of ``key`` counted as used once more (dropped at its μ-th use)."""
        rollout = self._entries.get(key)
        if rollout is not None:
            rollout.uses += 1
            if rollout.uses >= self.uses:
                del self._entries[key]
        return rollout

    def put(self, key: tuple, rollout: Rollout) -> None:
        """Keep a fresh rollout (its first use is the current pass) for its remaining uses."""
        if self.uses > 1:
            self._entries[key] = rollout

    def __len__(self) -> int:
        return len(self._entries)


class GrpoStep:
    """``loss_fn`` of the method: rollout, rewards, advantages, policy loss (see module doc)."""

    def __init__(self, config: RunConfig, tokenizer, rewards):
        self.g, self.cfg, self.tokenizer, self.rewards = config.grpo, config, tokenizer, rewards
        self.stop_ids = stop_token_ids(tokenizer)
        if not self.stop_ids:
            raise ModelError(
                "the tokenizer has neither an EOS token nor an end-of-turn token; "
                "GRPO cannot tell where a completion ends"
            )
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.stop_ids[-1]
        self.cache = RolloutCache(config.grpo.iterations)

    def __call__(self, model, batch: PromptBatch):
        g, items = self.g, batch.items
        device = next(model.parameters()).device
        training = model.training and torch.is_grad_enabled()
        key = tuple(it.source for it in items)
        # Evaluation always samples afresh (with its own seeded RNG) and never touches the cache.
        rollout = self.cache.take(key) if training else None
        if rollout is None:
            rollout = self._rollout(model, items, training, device)
            if training:
                self.cache.put(key, rollout)

        chunk = self.cfg.train.loss_chunk_size
        first_use = rollout.old_logp is None
        if first_use:
            # Before the policy forward: switching to a reference adapter toggles requires_grad
            # of the trained one, which must not happen while its graph is being built.
            rollout.ref_logp = self._reference_logprobs(model, rollout.rows, rollout.completions, chunk)
        logp, mask = completion_logprobs(
            model, rollout.rows, rollout.completions, temperature=g.temperature, chunk_size=chunk
        )
        if first_use:  # π_old is the policy now (ρ = 1)
            rollout.old_logp = logp.detach()
        loss, m = clipped_policy_loss(
            logp,
            rollout.old_logp,
            rollout.advantages,
            mask,
            epsilon_low=g.epsilon,
            epsilon_high=g.epsilon_high,
            beta=g.beta,
            ref_logp=rollout.ref_logp,
            normalization=g.loss_normalization,
            max_tokens=g.max_new_tokens,
        )
        batch.n_tokens = sum(len(r) for r in rollout.rows) + int(m["completion_tokens"])
        metrics = {**rollout.reward_metrics, **m, **rollout.per_function}
        if g.iterations > 1:
            metrics["rollout_use"] = rollout.uses * len(rollout.completions)
        return loss, metrics

    def _rollout(self, model, items: list[PromptItem], training: bool, device) -> Rollout:
        """Sample ``G`` completions per prompt, score them and compute their advantages."""
        g = self.g
        rng = contextlib.nullcontext() if training else _eval_rng(items, self.cfg.train.seed, device)
        prompts = [it.prompt_ids for it in items]
        with rng:
            completions = sample_groups(
                model,
                prompts,
                group_size=g.group_size,
                max_new_tokens=g.max_new_tokens,
                temperature=g.temperature,
                top_p=g.top_p,
                stop_ids=self.stop_ids,
                pad_id=self.pad_id,
            )
        samples = [
            Sample(it.prompt, self._decode(c), len(c), it.extra)
            for it, group in zip(items, _groups(completions, g.group_size))
            for c in group
        ]
        total, per_function = self.rewards.score(samples)
        rewards = torch.tensor(total, dtype=torch.float32).view(len(items), g.group_size)
        advantages = group_advantages(rewards, scale=g.scale_rewards).reshape(-1).to(device)
        reward_metrics = {
            "completions": len(samples),
            "groups": len(items),
            "reward": sum(total),
            "reward_std": float(rewards.std(dim=1).sum()),
            "zero_std_groups": int((rewards.std(dim=1) == 0).sum()),
            "truncated": sum(1 for c in completions if c[-1] not in self.stop_ids),
        }
        rows = [p for p in prompts for _ in range(g.group_size)]
        return Rollout(
            rows,
            completions,
            advantages,
            reward_metrics,
            {f"reward_{name}": sum(values) for name, values in per_function.items()},
        )

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True).strip()

    def _reference_logprobs(self, model, rows, completions, chunk):
        """Reference log-probs (eval mode, no grad): the base with adapters disabled, or the
        frozen ``adapter.init_from`` adapter when training started from one; None without
        adapters."""
        if not hasattr(model, "disable_adapter"):
            return None
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), reference_policy(model):
                logp, _ = completion_logprobs(
                    model, rows, completions, temperature=self.g.temperature, chunk_size=chunk
                )
        finally:
            model.train(was_training)
        return logp


def _groups(completions: list, size: int) -> list[list]:
    return [completions[i : i + size] for i in range(0, len(completions), size)]


def summarize(sums: dict, n: int) -> dict:
    """Per-step metrics from the window's sums: means over completions (rewards, length, use
    index of the rollout), over groups (the within-group reward std) and over sampled tokens
    (KL, clip fraction, ratio π_θ/π_old)."""
    completions = max(sums.get("completions", 0.0), 1.0)
    groups = max(sums.get("groups", 0.0), 1.0)
    tokens = max(sums.get("completion_tokens", 0.0), 1.0)
    out = {
        "reward": sums.get("reward", 0.0) / completions,
        "reward_std": sums.get("reward_std", 0.0) / groups,
        "zero_std_fraction": sums.get("zero_std_groups", 0.0) / groups,
        "completion_length": sums.get("completion_tokens", 0.0) / completions,
        "truncated_fraction": sums.get("truncated", 0.0) / completions,
        "clip_fraction": (sums.get("clipped_low", 0.0) + sums.get("clipped_high", 0.0)) / tokens,
        "ratio_mean": sums.get("ratio", tokens) / tokens,
    }
    if "kl" in sums:
        out["kl"] = sums["kl"] / tokens
    if "rollout_use" in sums:  # grpo.iterations > 1: 1 on a fresh rollout's step, 2..μ on reuses
        out["rollout_use"] = sums["rollout_use"] / completions
    for key, value in sums.items():
        if key.startswith("reward_") and key != "reward_std":
            out[key] = value / completions
    return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}


def build(config: RunConfig, model=None, tokenizer=None) -> MethodParts:
    """The GRPO step as engine parts; ``batch_count`` = completions in the batch, and each
    window of prompts is fed to ``grpo.iterations`` consecutive optimizer steps."""
    g = config.grpo
    device = next(model.parameters()).device if model is not None else None
    rewards = build_rewards(
        g.rewards, max_new_tokens=g.max_new_tokens, device=device, dtype=config.train.dtype
    )
    step = GrpoStep(config, tokenizer, rewards)
    if model is not None and g.beta > 0 and config.adapter.init_from is not None:
        # GRPO after SFT: the KL anchor is the model training starts from, not the plain base.
        load_reference_adapter(model, config.adapter.init_from)

    def collate(items: list[PromptItem]) -> PromptBatch:
        return PromptBatch(list(items), g.group_size, g.group_size * sum(len(i.prompt_ids) for i in items))

    return MethodParts(
        loss_fn=step,
        collate=collate,
        batch_count=lambda batch: len(batch.items) * batch.group_size,
        item_tokens=lambda item: g.group_size * (len(item.prompt_ids) + g.max_new_tokens),
        summarize=summarize,
        perplexity=False,
        batch_reuse=g.iterations,
    )
