"""The sampler behind the Tinker SDK's ``SamplingClient.sample`` (and ``compute_logprobs``).

:func:`sample` continues one prompt ``num_samples`` times with a causal LM (a Hugging Face model,
or a PEFT model whose active adapter is the one to sample from), returning each continuation's
tokens, the log-prob of each sampled token and why it stopped, plus — on request — the prompt's
own log-probs and top-k alternatives. The route turns the SDK's ``SampleRequest`` into a
:class:`SampleSpec` and the :class:`SampleResult` into the protobuf the SDK reads
(:func:`tunesmith.tinker.wire.encode_sample_response`).

How a sample is made:

1. The prompt is prefilled once (one forward pass with the KV cache); the cache is then repeated
   ``num_samples`` times along the batch and every sample decodes in one batch, one token per
   step. A finished row is dropped from the batch (and from the cache).
2. Logits are the model's ``.logits``: Hugging Face applies the family's output transform there
   (Gemma 2/3's final soft-cap, Cohere's ``logit_scale``, Granite's ``logits_scaling``), the same
   ``LogitTransform`` training uses (``tests/unit/tinker/test_sampler.py`` checks the two agree on
   a soft-capped Gemma 2). They are turned into float32 before any softmax.
3. The log-prob of a sampled token is ``log_softmax(z / T)`` at its id, ``T`` the temperature
   (``T = 1`` when greedy), taken before the top-k / top-p truncation: the log-prob of the
   token under the temperature-scaled model, which is what an importance-sampling loss needs.
4. The next token is the argmax when ``temperature == 0``; otherwise a draw from
   ``softmax(z / T)`` restricted to the ``top_k`` most likely tokens (ties with the k-th kept),
   then to the top-p nucleus (the smallest set of most likely tokens whose mass reaches
   ``top_p``: a token is kept when the mass ranked strictly above it is below ``top_p``, the
   rule of ``serve.sampling.nucleus_probs``), renormalised. ``seed`` an int: the draws come from
   a private ``torch.Generator`` seeded with it (same inputs and seed, same output; the global
   RNG is untouched); None: from the global torch RNG. All rows draw from that one stream, one
   batched draw per step, so a row's tokens also depend on when its siblings stopped: a request
   reproduces as a whole, not sample by sample.
5. A row stops after a token in ``stop_token_ids`` (the token is kept), once its decoded text
   contains one of ``stop_strings`` (every token up to the one completing the string is kept;
   the text is not cut inside a token), or after ``max_tokens`` tokens (``"length"``).

Prompt log-probs are ``log p(prompt[i] | prompt[:i])`` from the prefill logits, without
temperature (the model's own log-probs, what ``compute_logprobs`` returns), NaN at position 0
and, with ``prompt_logprobs_last_n = N``, at every position before the last N.

Refused with :class:`~tunesmith.errors.DataError` naming the request field: an empty prompt,
ids outside the vocabulary, ``num_samples`` outside 1 … :data:`MAX_SAMPLES`, ``max_tokens < 1``
(0 only when prompt log-probs are asked for), a prompt plus ``max_tokens`` longer than
``max_context``, a negative or non-finite temperature, a seed outside 0 … 2**64 - 1, ``top_p`` outside (0, 1], ``top_k`` below -1, top-k widths past
:data:`MAX_TOPK` or the vocabulary, stop strings without a tokenizer. Logits with a NaN (a model
whose training diverged) raise :class:`~tunesmith.errors.ModelError`.

Memory: with prompt log-probs the prompt is prefilled :data:`PREFILL_CHUNK` tokens at a time
through the KV cache, each piece keeping only the logits of positions that predict a scored
token (the last N + 1 with ``prompt_logprobs_last_n = N``); the float32 softmax over them is
taken :data:`_SCORE_CHUNK` positions at a time.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch

from ..errors import DataError, ModelError
from ..models.adapters import unwrap
from ..models.generate import generation_mode

MAX_TOPK = 128
"""Widest top-k (``topk_prompt_logprobs`` / ``topk_sample_logprobs``) served: the response holds
``positions × k`` cells, 8 bytes each."""

MAX_SAMPLES = 1024
"""Most samples one request may ask for: they decode as one batch, whose KV cache is this many
copies of the prompt's (RL groups are 4 to 64 samples)."""

TOPK_EMPTY_ID = 0
TOPK_EMPTY_LOGPROB = -99999.0
"""The SDK's empty top-k cell (``tinker.types.topk_logprobs.MASK_LOGPROB``): a row of them reads
back as None (prompt position 0, positions before ``prompt_logprobs_last_n``)."""

PREFILL_CHUNK = 2048
"""Prompt tokens per prefill forward when the prompt is scored (their logits are kept: 2048 x
152k vocab x 2 B = 620 MB in bf16); an unscored prompt is prefilled in one forward."""

_SCORE_CHUNK = 256  # prompt positions per float32 log-softmax: 256 x 152k vocab x 4 B = 156 MB


@dataclass(frozen=True)
class SampleSpec:
    """What to sample, as the SDK's ``SampleRequest`` and its ``SamplingParams`` say.

    ``top_k`` -1 (or 0) means no limit. ``stop_token_ids`` / ``stop_strings`` are the request's
    ``sampling_params.stop`` resolved by the route (ids, or strings, or the model's implicit EOS
    when the SDK sends None). ``topk_*`` are widths (0: none); ``prompt_logprobs_last_n`` scores
    only the last N prompt positions (it needs ``prompt_logprobs``)."""

    num_samples: int = 1
    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()
    prompt_logprobs: bool = False
    topk_prompt_logprobs: int = 0
    topk_sample_logprobs: int = 0
    prompt_logprobs_last_n: int | None = None


Topk = tuple[list[list[int]], list[list[float]]]
"""(ids ``[n][k]``, log-probs ``[n][k]``), most likely first; empty cells are
(:data:`TOPK_EMPTY_ID`, :data:`TOPK_EMPTY_LOGPROB`)."""


@dataclass
class SampledSequence:
    """One continuation: its tokens, the log-prob of each (see the module doc), ``stop_reason``
    ``"stop"`` (a stop token or string) or ``"length"`` (``max_tokens`` reached), and with
    ``topk_sample_logprobs = k`` the k most likely tokens at each step (same distribution)."""

    tokens: list[int]
    logprobs: list[float]
    stop_reason: str
    topk: Topk | None = None


@dataclass
class SampleResult:
    """The continuations (``num_samples`` of them, in draw order); ``prompt_logprobs``
    (``len(prompt)`` floats, NaN where not scored) when asked for; ``topk_prompt`` (one row per
    prompt position, rows not scored all empty cells) when ``topk_prompt_logprobs > 0``."""

    sequences: list[SampledSequence]
    prompt_logprobs: list[float] | None = None
    topk_prompt: Topk | None = field(default=None)


def resolve_stop(stop, eos_ids) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The SDK's ``sampling_params.stop`` as (``stop_token_ids``, ``stop_strings``) of a
    :class:`SampleSpec`: None keeps the implicit end-of-sequence stop (``eos_ids``, the model's
    EOS id(s)); ``[]`` stops at nothing, not even EOS; a string, a list of strings or a list of
    token ids are those. A list mixing strings and ids, or holding anything else, is a
    :class:`DataError` naming ``sampling_params.stop[i]``; whether the ids exist is
    :func:`sample`'s check."""
    if stop is None:
        return tuple(int(i) for i in eos_ids), ()
    if isinstance(stop, str):
        return (), (stop,)
    if not isinstance(stop, (list, tuple)):
        raise _bad(
            "sampling_params.stop",
            f"must be a string, a list of strings or a list of token ids, not {stop!r}",
        )
    as_ids = bool(stop) and _is_int(stop[0])
    if stop and not as_ids and not isinstance(stop[0], str):
        raise _bad("sampling_params.stop[0]", f"{stop[0]!r} is neither a string nor a token id")
    for i, item in enumerate(stop):
        if as_ids and not _is_int(item):
            raise _bad(
                f"sampling_params.stop[{i}]", f"{item!r} is not a token id like the first entry; do not mix"
            )
        if not as_ids and not isinstance(item, str):
            raise _bad(
                f"sampling_params.stop[{i}]", f"{item!r} is not a string like the first entry; do not mix"
            )
    return (tuple(stop), ()) if as_ids else ((), tuple(stop))


def sample(
    model, prompt: list[int], spec: SampleSpec, *, tokenizer=None, max_context: int | None = None
) -> SampleResult:
    """Sample ``spec.num_samples`` continuations of ``prompt`` (token ids) from ``model``.

    ``model`` is called as ``model(input_ids=…, cache=…, use_cache=True,
    logits_to_keep=…)`` under ``torch.no_grad`` in eval mode (:func:`generation_mode`; the
    previous mode is restored; ``past_key_values=`` where transformers predates ``cache=``).
    ``tokenizer`` is needed for ``stop_strings`` only.
    ``max_context``: the longest prompt + ``max_tokens`` accepted. Bad requests raise
    :class:`DataError` before the model runs."""
    hf = unwrap(model)
    vocab = _vocab_size(hf)
    _validate(prompt, spec, vocab, tokenizer, max_context)
    device = hf.get_input_embeddings().weight.device
    generator = None
    if spec.seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(spec.seed)
    score_from = _first_scored(prompt, spec)
    with torch.no_grad(), generation_mode(model):
        cache, last, prompt_lp, topk_prompt = _prefill(model, prompt, device, score_from, spec)
        if spec.max_tokens == 0:
            sequences = [SampledSequence([], [], "length") for _ in range(spec.num_samples)]
        else:
            sequences = _decode(model, cache, last, spec, tokenizer, generator)
    if not spec.prompt_logprobs:
        prompt_lp = None
    return SampleResult(sequences=sequences, prompt_logprobs=prompt_lp, topk_prompt=topk_prompt)


def check_request(
    model, prompt: list[int], spec: SampleSpec, *, tokenizer=None, max_context: int | None = None
) -> None:
    """The DataError :func:`sample` would raise for this request before running, if any."""
    _validate(prompt, spec, _vocab_size(unwrap(model)), tokenizer, max_context)


def batch_key(spec: SampleSpec) -> tuple | None:
    """Requests whose specs share a key may decode in one batch (:func:`sample_batch`); None for
    a spec that must run alone: seeded (its own stream), scoring its prompt or asking for top-k."""
    if (
        spec.seed is not None
        or spec.prompt_logprobs
        or spec.topk_prompt_logprobs
        or spec.topk_sample_logprobs
        or not _is_int(spec.max_tokens)
        or spec.max_tokens < 1
    ):
        return None
    return (spec.temperature, spec.top_k, spec.top_p, spec.max_tokens, spec.stop_token_ids, spec.stop_strings)


def sample_batch(
    model, requests: list[tuple[list[int], SampleSpec]], *, tokenizer=None, max_context: int | None = None
) -> list[SampleResult]:
    """Several requests of one :func:`batch_key` sampled together: each prompt is prefilled once
    (left-padded, one forward with an attention mask and per-row positions), its cache row is
    repeated ``num_samples`` times, and every row of every request decodes in one batch (finished
    rows leave it). Each request's result is distributed as :func:`sample` would give it (draws
    from the global torch RNG; log-probs as in the module docstring, step 3). On a CPU a decode
    step of a small model costs about the same for 1 row as for 32, so RL loops that send one
    request per episode (``num_samples=1``) gain about the batch size in tokens per second."""
    if not requests:
        return []
    key = batch_key(requests[0][1])
    if key is None or any(batch_key(spec) != key for _, spec in requests):
        raise ValueError("sample_batch: the requests do not share one batch key")
    hf = unwrap(model)
    vocab = _vocab_size(hf)
    for prompt, spec in requests:
        _validate(prompt, spec, vocab, tokenizer, max_context)
    spec = requests[0][1]
    device = hf.get_input_embeddings().weight.device
    width = max(len(p) for p, _ in requests)
    ids = torch.zeros(len(requests), width, dtype=torch.long)
    mask = torch.zeros(len(requests), width, dtype=torch.long)
    for i, (prompt, _) in enumerate(requests):
        ids[i, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[i, width - len(prompt) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    owner = [i for i, (_, s) in enumerate(requests) for _ in range(s.num_samples)]  # row -> request
    with torch.no_grad(), generation_mode(model):
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            use_cache=True,
            logits_to_keep=1,
        )
        cache = _cache_of(out)
        pick = torch.tensor(owner, dtype=torch.long, device=device)
        cache.reorder_cache(pick)
        rows_out = _decode_rows(
            model,
            cache,
            out.logits[:, -1].float().index_select(0, pick),
            mask.index_select(0, pick),
            spec,
            tokenizer,
        )
    results = [SampleResult(sequences=[]) for _ in requests]
    for row, seq in zip(owner, rows_out):
        results[row].sequences.append(seq)
    return results


def _decode_rows(
    model, cache, z: torch.Tensor, mask: torch.Tensor | None, spec: SampleSpec, tokenizer, generator=None
) -> list:
    """Decode every row of a batch (``cache``; last logits ``z [R, V]``) for up to
    ``spec.max_tokens`` tokens, drawing from ``generator`` (None: the global RNG); finished rows
    leave the batch. ``mask [R, L]``: the rows are left-padded (one attention-mask column and
    one position per row are added each step); None: every row is the same unpadded prompt.
    One :class:`SampledSequence` per row, in row order."""
    n = z.shape[0]
    temperature = spec.temperature if spec.temperature > 0 else 1.0  # greedy: the model's log-probs
    stop_ids = torch.tensor(sorted(set(spec.stop_token_ids)), dtype=torch.long, device=z.device)
    tokens: list[list[int]] = [[] for _ in range(n)]
    logprobs: list[list[float]] = [[] for _ in range(n)]
    top_ids: list[list[list[int]]] = [[] for _ in range(n)]
    top_lps: list[list[list[float]]] = [[] for _ in range(n)]
    reasons = ["length"] * n
    rows = list(range(n))  # live rows, in batch order
    positions = None if mask is None else mask.sum(-1)  # the next token's position, per row
    for step in range(spec.max_tokens):
        _check_finite(z, step)
        logp = torch.log_softmax(z / temperature, dim=-1)
        chosen = _choose(z, spec, generator)
        chosen_lp = logp.gather(1, chosen[:, None])[:, 0]
        if spec.topk_sample_logprobs:
            tv, ti = logp.topk(spec.topk_sample_logprobs, dim=-1)
            tv, ti = tv.tolist(), ti.tolist()
        hit = torch.isin(chosen, stop_ids) if len(stop_ids) else torch.zeros_like(chosen, dtype=torch.bool)
        live = []
        for b, (tok, lp, stop) in enumerate(zip(chosen.tolist(), chosen_lp.tolist(), hit.tolist())):
            row = rows[b]
            tokens[row].append(tok)
            logprobs[row].append(lp)
            if spec.topk_sample_logprobs:
                top_ids[row].append(ti[b])
                top_lps[row].append(tv[b])
            if stop or (spec.stop_strings and _has_stop_string(tokenizer, tokens[row], spec)):
                reasons[row] = "stop"
            else:
                live.append(b)
        if not live or step == spec.max_tokens - 1:
            break
        if len(live) < len(rows):
            keep = torch.tensor(live, dtype=torch.long, device=z.device)
            cache.reorder_cache(keep)
            chosen = chosen.index_select(0, keep)
            if mask is not None:
                mask, positions = mask.index_select(0, keep), positions.index_select(0, keep)
            rows = [rows[b] for b in live]
        padded = {}
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            padded = {"attention_mask": mask, "position_ids": positions[:, None]}
            positions = positions + 1
        out = model(
            input_ids=chosen[:, None], use_cache=True, logits_to_keep=1, **padded, **{_cache_keyword(): cache}
        )
        cache = _cache_of(out)
        z = out.logits[:, -1].float()
    return [
        SampledSequence(
            tokens=tokens[r],
            logprobs=logprobs[r],
            stop_reason=reasons[r],
            topk=(top_ids[r], top_lps[r]) if spec.topk_sample_logprobs else None,
        )
        for r in range(n)
    ]


def _prefill(model, prompt: list[int], device, score_from: int | None, spec: SampleSpec):
    """Run the prompt through ``model`` -> (KV cache, last position's logits ``[V]``, prompt
    log-probs, prompt top-k) (the last two None without ``score_from``).

    Without prompt scoring this is one forward keeping only the last position's logits. With it,
    the prompt goes in :data:`PREFILL_CHUNK`-token pieces through the growing cache, each keeping
    the logits of its positions that predict a scored token, which are scored at once: the
    logits held at a time are bounded by the piece, not by the prompt."""
    n = len(prompt)
    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    need_from = n - 1 if score_from is None else score_from - 1  # first position whose logits count
    scores = None if score_from is None else _PromptScores(prompt, score_from, spec.topk_prompt_logprobs)
    step = n if score_from is None else PREFILL_CHUNK
    cache = None
    for a in range(0, n, step):
        b = min(n, a + step)
        keep = b - max(a, need_from) if b > need_from else 1  # never 0: that keeps every position
        kwargs = {} if cache is None else {_cache_keyword(): cache}
        out = model(input_ids=ids[:, a:b], use_cache=True, logits_to_keep=keep, **kwargs)
        cache = _cache_of(out)
        if scores is not None and b > need_from:
            # Row r holds the logits at position b - keep + r, predicting the token after it.
            rows = keep - 1 if b == n else keep  # the prompt's last position predicts no prompt token
            scores.add(out.logits[0, :rows], b - keep + 1)
    last = out.logits[0, -1]
    if scores is None:
        return cache, last, None, None
    return cache, last, scores.logprobs, scores.topk()


# ---- decoding ------------------------------------------------------------------------------


def _decode(model, cache, last_logits: torch.Tensor, spec: SampleSpec, tokenizer, generator):
    """Decode ``spec.num_samples`` rows from the prefilled ``cache`` (batch 1) whose last
    position's logits are ``last_logits [V]``: the cache repeated per row, then
    :func:`_decode_rows` (finished rows leave the batch)."""
    n = spec.num_samples
    cache.batch_repeat_interleave(n)
    z = last_logits.float().unsqueeze(0).expand(n, -1)
    return _decode_rows(model, cache, z, None, spec, tokenizer, generator)


@functools.cache
def _cache_keyword() -> str:
    """The name a model's forward takes its KV cache by: ``cache`` where transformers has it
    (``past_key_values`` is deprecated there), else ``past_key_values``."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return (
        "cache"
        if "cache" in getattr(CausalLMOutputWithPast, "__dataclass_fields__", {})
        else "past_key_values"
    )


def _cache_of(out):
    return getattr(out, _cache_keyword())


def _check_finite(z: torch.Tensor, step: int) -> None:
    """A NaN logit (or a row without a finite one) has no distribution to draw from: a model whose
    weights diverged in training. Said plainly instead of torch's multinomial error."""
    if torch.isnan(z).any() or not torch.isfinite(z.max(dim=-1).values).all():
        raise ModelError(
            f"the model's logits at sampling step {step} are NaN or have no finite value; "
            "its weights are probably not finite (did training diverge?)"
        )


def _choose(z: torch.Tensor, spec: SampleSpec, generator) -> torch.Tensor:
    """Next token per row of float32 logits ``z [B, V]`` -> ``[B]`` int64 (module doc, step 4)."""
    if spec.temperature == 0:
        return z.argmax(dim=-1)
    return torch.multinomial(
        sampling_probs(z, spec.temperature, spec.top_k, spec.top_p), 1, generator=generator
    )[:, 0]


def sampling_probs(z: torch.Tensor, temperature: float, top_k: int = -1, top_p: float = 1.0) -> torch.Tensor:
    """The distribution a token is drawn from, per row of logits ``z [B, V]``: ``softmax(z / T)``
    kept to the ``top_k`` most likely tokens (ties with the k-th kept; ``top_k <= 0``: all), then
    to the top-p nucleus, renormalised. float64 ``[B, V]``, each row summing to 1: the row max is
    subtracted first, so no temperature > 0 can overflow it."""
    z = z.double()
    if 0 < top_k < z.shape[-1]:
        kth = z.topk(top_k, dim=-1).values[:, -1:]
        z = z.masked_fill(z < kth, -math.inf)
    probs = torch.softmax((z - z.max(dim=-1, keepdim=True).values) / temperature, dim=-1)
    if top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(dim=-1, descending=True)
    mass_above = sorted_p.cumsum(-1) - sorted_p
    sorted_p = torch.where(mass_above < top_p, sorted_p, torch.zeros_like(sorted_p))
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return kept / kept.sum(dim=-1, keepdim=True)


def _has_stop_string(tokenizer, tokens: list[int], spec: SampleSpec) -> bool:
    """Whether the completion ``tokens`` (just grown by one token) now contains a stop string.

    Only the last :func:`_stop_window` tokens are decoded, not the whole completion (which would
    make a long completion quadratic): a stop string completed by the newest token lies inside
    them. A stop string of ``m`` characters spans at most ``4m`` tokens (UTF-8 takes at most 4
    bytes a character, a byte-level or byte-fallback token at least one byte); the few tokens more
    absorb what a decode does differently at its start (a SentencePiece leading space dropped, a
    character cut mid-bytes shown as U+FFFD), which can hide a match there but never invent one."""
    text = tokenizer.decode(tokens[-_stop_window(spec.stop_strings) :])
    return any(s in text for s in spec.stop_strings)


def _stop_window(stop_strings: tuple[str, ...]) -> int:
    return 4 * max(len(s) for s in stop_strings) + 4


# ---- prompt scoring ------------------------------------------------------------------------


def _first_scored(prompt: list[int], spec: SampleSpec) -> int | None:
    """The first prompt position whose log-prob is asked for (None: no prompt scoring)."""
    if not (spec.prompt_logprobs or spec.topk_prompt_logprobs):
        return None
    if spec.prompt_logprobs_last_n is not None:
        return len(prompt) - spec.prompt_logprobs_last_n
    return 1


class _PromptScores:
    """Prompt log-probs (NaN before ``first``) and top-k rows (empty before ``first``), filled
    in position order from logits pieces."""

    def __init__(self, prompt: list[int], first: int, k: int):
        self.prompt, self.k = prompt, k
        self.logprobs = [math.nan] * len(prompt)
        self.top_ids = [[TOPK_EMPTY_ID] * k for _ in range(first)]
        self.top_lps = [[TOPK_EMPTY_LOGPROB] * k for _ in range(first)]

    def add(self, logits: torch.Tensor, first: int) -> None:
        """Score positions ``first …`` from ``logits [m, V]`` (model dtype) predicting them."""
        targets = torch.tensor(
            self.prompt[first : first + logits.shape[0]], dtype=torch.long, device=logits.device
        )
        for s in range(0, logits.shape[0], _SCORE_CHUNK):
            logp = torch.log_softmax(logits[s : s + _SCORE_CHUNK].float(), dim=-1)
            got = logp.gather(1, targets[s : s + _SCORE_CHUNK, None])[:, 0].tolist()
            self.logprobs[first + s : first + s + len(got)] = got
            if self.k:
                tv, ti = logp.topk(self.k, dim=-1)
                self.top_ids += ti.tolist()
                self.top_lps += tv.tolist()

    def topk(self) -> Topk | None:
        return (self.top_ids, self.top_lps) if self.k else None


# ---- validation ----------------------------------------------------------------------------


def _vocab_size(hf) -> int:
    """Ids a prompt may hold: the input embedding's rows (also what the head scores)."""
    return int(hf.get_input_embeddings().weight.shape[0])


def _bad(field_name: str, message: str) -> DataError:
    return DataError(f"{field_name}: {message}", field=field_name)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _validate(prompt, spec: SampleSpec, vocab: int, tokenizer, max_context: int | None) -> None:
    if not isinstance(prompt, (list, tuple)) or not prompt:
        raise _bad("prompt", "the prompt is empty; send at least one token")
    for i, t in enumerate(prompt):
        if not _is_int(t) or not 0 <= t < vocab:
            raise _bad(f"prompt[{i}]", f"{t!r} is not a token id of this model (0 to {vocab - 1})")
    if not _is_int(spec.num_samples) or not 1 <= spec.num_samples <= MAX_SAMPLES:
        raise _bad("num_samples", f"must be from 1 to {MAX_SAMPLES}, got {spec.num_samples!r}")
    scoring = spec.prompt_logprobs or spec.topk_prompt_logprobs > 0
    if not _is_int(spec.max_tokens) or spec.max_tokens < (0 if scoring else 1):
        raise _bad(
            "sampling_params.max_tokens",
            f"must be at least 1 (0 only with prompt logprobs), got {spec.max_tokens!r}",
        )
    if max_context is not None and len(prompt) + spec.max_tokens > max_context:
        raise _bad(
            "sampling_params.max_tokens",
            f"the prompt's {len(prompt)} tokens plus max_tokens {spec.max_tokens} make "
            f"{len(prompt) + spec.max_tokens}, past the model's context of {max_context} tokens",
        )
    t = spec.temperature
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        raise _bad("sampling_params.temperature", f"must be a finite number >= 0, got {t!r}")
    p = spec.top_p
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
        raise _bad("sampling_params.top_p", f"must be in (0, 1], got {p!r}")
    if not _is_int(spec.top_k) or spec.top_k < -1:
        raise _bad(
            "sampling_params.top_k", f"must be -1 or 0 (no limit) or a positive integer, got {spec.top_k!r}"
        )
    if spec.seed is not None and (not _is_int(spec.seed) or not 0 <= spec.seed < 2**64):
        raise _bad("sampling_params.seed", f"must be an integer from 0 to 2**64 - 1, got {spec.seed!r}")
    for name in ("topk_prompt_logprobs", "topk_sample_logprobs"):
        k = getattr(spec, name)
        widest = min(MAX_TOPK, vocab)
        if not _is_int(k) or not 0 <= k <= widest:
            raise _bad(name, f"must be from 0 to {widest}, got {k!r}")
    for i, t in enumerate(spec.stop_token_ids):
        if not _is_int(t) or not 0 <= t < vocab:
            raise _bad(
                f"sampling_params.stop[{i}]", f"{t!r} is not a token id of this model (0 to {vocab - 1})"
            )
    for i, s in enumerate(spec.stop_strings):
        if not isinstance(s, str) or not s:
            raise _bad(f"sampling_params.stop[{i}]", f"a stop string must be a non-empty string, got {s!r}")
    if spec.stop_strings and tokenizer is None:
        raise _bad(
            "sampling_params.stop", "stop strings need the model's tokenizer, which this sampler lacks"
        )
    n = spec.prompt_logprobs_last_n
    if n is not None:
        if not spec.prompt_logprobs:
            raise _bad("prompt_logprobs_last_n", "applies to prompt logprobs; set prompt_logprobs")
        if not _is_int(n) or not 1 <= n <= len(prompt) - 1:
            raise _bad(
                "prompt_logprobs_last_n",
                f"must be from 1 to len(prompt) - 1 = {len(prompt) - 1}, got {n!r}",
            )
