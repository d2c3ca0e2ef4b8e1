"""Knowledge distillation (``method: distill``): the student ``model`` learns from a teacher.

Per supervised token the loss is ``alpha · CE(label) + (1 − alpha) · T² · D(teacher_T ‖ student_T)``
(Hinton et al. 2015), ``D`` one of forward KL, reverse KL or generalised JSD
(:mod:`tunesmith.losses.distill`). Data are chat / SFT files rendered exactly as for ``sft``;
the teacher sees the same padding-free batch, and logits — teacher's and student's — are formed
only at supervised positions, ``loss_chunk_size`` rows at a time (``[chunk, V]``, never ``[T, V]``;
chunks are recomputed in the backward pass, so only one chunk's logits are alive at once).

Where the teacher's distribution comes from:

- on the fly (default): the frozen teacher (base, merged, or base + LoRA adapter; bf16 on CUDA)
  runs under ``no_grad`` beside the student, on ``distill.teacher_device`` if given;
- ``distill.cache_top_k: k``: computed once before the student loads and kept on disk as top-k
  log-probs (:mod:`.distill_cache`); the teacher is freed before training starts.

``distill.mode: on_policy`` is GKD (Agarwal et al. 2024, "On-Policy Distillation of Language
Models"): for a fraction ``lambda`` of training forward passes (drawn from the run's checkpointed
RNG, so resume is exact) the student samples its own completion of each example's prompt — the
tokens before the example's first trained token — and the teacher scores those tokens; no labels
exist there, so that pass's loss is ``(1 − alpha) · T² · D`` alone. The engine normalises by
counts fixed before the forward passes, so a sampled pass is weighted as the data pass it
replaces: its per-token mean times the data pass's supervised-token count.

Logged per step (and ``eval_`` at evaluation): ``loss``; ``ce`` (mean CE on labelled tokens);
``divergence`` (mean ``T² · D``); ``agreement`` (fraction of positions where the student's and
the teacher's most likely tokens agree); ``on_policy`` (share of the step from student samples).
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint

from ..config import RunConfig
from ..data.collate import Batch, collate
from ..data.render import Rendered
from ..losses.distill import distill_loss
from ..models.device import resolve_device
from ..models.forward import decoder_hidden_states, head_logits
from ..models.generate import Sampling, generate_completions
from ..models.load import load_tokenizer
from ..models.template import stop_token_ids
from .common import (
    MethodParts,
    PreparedData,
    check_rendered,
    pack_prepared,
    render_examples,
)
from .distill_cache import cached_topk
from .distill_teacher import (
    check_same_vocabulary,
    describe,
    fingerprint,
    load_teacher,
    model_vocab_size,
    resolve_teacher,
    teacher_hidden,
    teacher_tokenizer_dir,
)

log = logging.getLogger("tunesmith")


@dataclass
class DistillItem:
    """A rendered example plus what distillation needs of it.

    ``prompt_len``: tokens before the first trained token (the prompt on-policy sampling
    continues). ``teacher_ids`` / ``teacher_logp``: ``[n_targets, k]`` cached teacher top-k at
    the item's supervised positions (None when the teacher runs on the fly).
    """

    input_ids: list[int]
    loss_mask: list[int]
    source: str
    prompt_len: int
    teacher_ids: torch.Tensor | None = None
    teacher_logp: torch.Tensor | None = None


@dataclass
class DistillBatch:
    """A padding-free :class:`Batch` plus the cached teacher rows and the prompts."""

    base: Batch
    teacher_ids: torch.Tensor | None  # [N, k] or None
    teacher_logp: torch.Tensor | None  # [N, k] or None
    prompts: list[list[int]]

    @property
    def n_tokens(self) -> int:
        return self.base.n_tokens

    @property
    def n_targets(self) -> int:
        return self.base.n_targets

    def to(self, device) -> DistillBatch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return DistillBatch(
            self.base.to(device), move(self.teacher_ids), move(self.teacher_logp), self.prompts
        )


def collate_distill(items: list[DistillItem]) -> DistillBatch:
    """Collate like SFT; cached teacher rows are concatenated in the same target order."""
    cached = items[0].teacher_ids is not None
    return DistillBatch(
        base=collate(items),
        teacher_ids=torch.cat([it.teacher_ids for it in items]) if cached else None,
        teacher_logp=torch.cat([it.teacher_logp for it in items]) if cached else None,
        prompts=[it.input_ids[: it.prompt_len] for it in items],
    )


def _item(r: Rendered) -> DistillItem:
    first = next(i for i in range(1, len(r.loss_mask)) if r.loss_mask[i])
    return DistillItem(r.input_ids, r.loss_mask, r.source, prompt_len=first)


def shared_vocab(config: RunConfig, teacher_base: str) -> int:
    """Logit columns compared: the smaller LM head (padded embedding tables may differ)."""
    return min(model_vocab_size(config.model.path), model_vocab_size(teacher_base))


def teacher_device(config: RunConfig) -> torch.device:
    return (
        torch.device(config.distill.teacher_device)
        if config.distill.teacher_device
        else resolve_device(config.train.device)
    )


# -- data ---------------------------------------------------------------------------------------


def prepare_data(config: RunConfig, tokenizer) -> PreparedData:
    """Check the teacher's vocabulary, render the SFT data, and (with ``cache_top_k``) score
    it with the teacher once, before the student is loaded."""
    d, t = config.distill, config.train
    base, adapter = resolve_teacher(d.teacher, d.teacher_adapter)
    teacher_tok = load_tokenizer(teacher_tokenizer_dir(base, adapter))
    check_same_vocabulary(
        tokenizer, teacher_tok, config.model.tokenizer or config.model.path, describe(base, adapter)
    )
    rendered, rendered_eval, stats, eval_stats = render_examples(
        config, tokenizer, max_length=t.max_length, train_on_all_tokens=config.data.train_on_all_tokens
    )
    check_rendered(config, rendered, stats)
    train, evals = [_item(r) for r in rendered], [_item(r) for r in rendered_eval]
    info = {"teacher": describe(base, adapter), "vocab": shared_vocab(config, base)}
    if d.cache_top_k:
        info["cache_dir"] = str(_attach_cache(config, base, adapter, train, evals, info["vocab"]))
    return pack_prepared(
        train, evals, stats, eval_stats, packing=t.packing, max_length=t.max_length, distill=info
    )


def _attach_cache(
    config: RunConfig, base: str, adapter: str | None, train: list, evals: list, vocab: int
) -> Path:
    d = config.distill
    cache_dir = Path(d.cache_dir) if d.cache_dir else Path(config.output_dir) / "teacher_cache"
    loaded = []

    def get_teacher():
        if not loaded:
            log.info(
                "distill: loading teacher %s to fill the top-%d cache", describe(base, adapter), d.cache_top_k
            )
            loaded.append(load_teacher(base, adapter, teacher_device(config), d.teacher_load_in_4bit))
        return loaded[0]

    common = dict(
        cache_dir=cache_dir,
        teacher_fp=fingerprint(base, adapter),
        k=d.cache_top_k,
        temperature=d.temperature,
        vocab=vocab,
        get_teacher=get_teacher,
        max_tokens=max(config.train.max_length, config.train.max_tokens_per_forward or 4096),
        chunk_size=config.train.loss_chunk_size,
    )
    for label, items in (("train", train), ("eval", evals)):
        for item, (ids, logp) in zip(items, cached_topk(items, label=label, **common)):
            item.teacher_ids, item.teacher_logp = ids, logp
    if loaded:  # free the teacher before the student is loaded
        loaded.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return cache_dir


# -- loss ---------------------------------------------------------------------------------------


class DistillLoss:
    """``loss_fn(model, batch) -> (loss_sum, metrics)`` of a distillation run (see module doc)."""

    def __init__(self, distill_cfg, teacher, vocab: int, tokenizer, chunk_size: int = 1024):
        self.d, self.teacher, self.vocab = distill_cfg, teacher, vocab
        self.chunk_size = chunk_size
        self.on_policy = distill_cfg.mode == "on_policy"
        self.stops = stop_token_ids(tokenizer) if tokenizer is not None else []
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = pad if pad is not None else (self.stops[0] if self.stops else 0)

    def __call__(self, model, batch: DistillBatch):
        if self.on_policy and model.training and float(torch.rand(())) < self.d.lambda_:
            return self.student_samples_loss(model, batch)
        cached = (batch.teacher_ids, batch.teacher_logp) if batch.teacher_ids is not None else None
        loss, sums = self.score(model, batch.base, cached, batch.base.target_ids)
        sums["ce_n"] = batch.n_targets
        if self.on_policy:
            sums["on_policy"] = 0
        return loss, sums

    def score(self, model, base: Batch, cached, targets):
        """Summed loss and metrics of ``base``'s supervised positions (``targets`` None: no CE)."""
        hidden = decoder_hidden_states(model, base)[0].index_select(0, base.target_positions)
        t_hidden = teacher_hidden(self.teacher, base) if cached is None else None
        loss = hidden.new_zeros((), dtype=torch.float32)
        sums = {"ce": 0.0, "divergence": 0.0, "agree": 0.0}
        n, c = hidden.shape[0], self.chunk_size
        for s in range(0, n, c):
            args = (
                hidden[s : s + c],
                None if t_hidden is None else t_hidden[s : s + c],
                None if cached is None else cached[0][s : s + c],
                None if cached is None else cached[1][s : s + c],
                None if targets is None else targets[s : s + c],
            )
            fn = partial(self._chunk, model)
            if torch.is_grad_enabled() and n > c:
                # Keep one chunk's [c, V] logits alive, not all of them: recompute in backward.
                out = checkpoint(fn, *args, use_reentrant=False)
            else:
                out = fn(*args)
            loss = loss + out[0]
            for key, value in zip(("ce", "divergence", "agree"), out[1:]):
                sums[key] += float(value)
        return loss, sums

    def _chunk(self, model, hidden, t_hidden, t_ids, t_logp, targets):
        student = head_logits(model, hidden)[:, : self.vocab]
        kwargs = dict(
            alpha=self.d.alpha, temperature=self.d.temperature, kind=self.d.divergence, beta=self.d.beta
        )
        if t_hidden is not None:
            with torch.no_grad():
                teacher = head_logits(self.teacher, t_hidden)[:, : self.vocab].to(student.device)
            loss, m = distill_loss(student, targets, teacher_logits=teacher, **kwargs)
        else:
            loss, m = distill_loss(student, targets, teacher_topk=(t_ids, t_logp), **kwargs)
        return loss, m["ce"], m["divergence"], m["agree"]

    def student_samples_loss(self, model, batch: DistillBatch):
        """GKD's on-policy pass: score the student's own completions of the batch's prompts,
        weighted as the data pass it replaces (``batch.n_targets`` tokens)."""
        completions = sample_completions(
            model,
            batch.prompts,
            max_new_tokens=self.d.max_new_tokens,
            temperature=self.d.sample_temperature,
            stops=self.stops,
            pad_id=self.pad_id,
        )
        items = [
            Rendered(p + c, [0] * len(p) + [1] * len(c), "student sample")
            for p, c in zip(batch.prompts, completions)
        ]
        sampled = collate(items).to(batch.base.input_ids.device)
        loss, sums = self.score(model, sampled, None, None)
        weight = batch.n_targets / max(sampled.n_targets, 1)
        return loss * weight, {
            "ce": 0.0,
            "ce_n": 0,
            "divergence": sums["divergence"] * weight,
            "agree": sums["agree"] * weight,
            "on_policy": batch.n_targets,
        }


def sample_completions(
    model, prompts: list[list[int]], *, max_new_tokens: int, temperature: float, stops: list[int], pad_id: int
) -> list[list[int]]:
    """Sample one completion per prompt from ``model`` (token ids, ending with the first stop
    token when one was produced; greedy at temperature 0). Uses the global RNG, which the
    engine checkpoints."""
    sampling = Sampling(temperature, top_k=0)
    completions = generate_completions(
        model, prompts, sampling, max_new_tokens=max_new_tokens, stop_ids=stops, pad_id=pad_id, seed=None
    )
    return [c or [pad_id] for c in completions]


def summarize(sums: dict, n: int) -> dict:
    """Logged metrics: CE over labelled tokens; divergence, agreement (and on-policy share)
    over all of the window's weight ``n``."""
    out = {
        "divergence": sums.get("divergence", 0.0) / max(n, 1),
        "agreement": sums.get("agree", 0.0) / max(n, 1),
    }
    if sums.get("ce_n"):
        out["ce"] = sums["ce"] / sums["ce_n"]
    if "on_policy" in sums:
        out["on_policy"] = sums["on_policy"] / max(n, 1)
    return out


def build(config: RunConfig, model=None, tokenizer=None) -> MethodParts:
    """The distillation loss over the student ``model``; loads the on-the-fly teacher."""
    d = config.distill
    base, adapter = resolve_teacher(d.teacher, d.teacher_adapter)
    teacher = None
    if not d.cache_top_k:
        device = teacher_device(config) if d.teacher_device else next(model.parameters()).device
        teacher = load_teacher(base, adapter, device, d.teacher_load_in_4bit)
        log.info(
            "distill: teacher %s on %s (%s), on the fly",
            describe(base, adapter),
            device,
            next(teacher.parameters()).dtype,
        )
    loss_fn = DistillLoss(d, teacher, shared_vocab(config, base), tokenizer, config.train.loss_chunk_size)
    return MethodParts(
        loss_fn=loss_fn,
        collate=collate_distill,
        batch_count=lambda b: b.n_targets,
        summarize=summarize,
        perplexity=False,
        extra={"teacher": teacher},
    )
