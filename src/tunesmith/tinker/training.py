"""``forward_backward`` / ``forward`` over a request's datums, and the Adam step.

A Tinker ``Datum`` holds the model input ``x`` (``T`` token ids) and, in ``loss_fn_inputs``,
``target_tokens`` of shape ``(T,)`` — the token each position predicts — or ``(T, K)`` (K
targets per position, e.g. distillation's top-K). :func:`forward_backward` packs the datums
into one padding-free batch (tunesmith's varlen attention: each datum attends only to itself,
exactly as if run alone), computes ``lp[t] = log softmax(z_t)[target_t]`` for every target in
float32, hands ``lp`` and the datum's inputs to :func:`tunesmith.losses.tinker.tinker_loss`,
sums the datums' losses and, unless ``forward_only``, back-propagates that sum. Gradients
*accumulate* in the parameters' ``.grad`` until :func:`adam_step` applies and clears them —
Tinker's contract: several ``forward_backward`` calls, then one ``optim_step``.

Everything a client could get wrong (ids outside the vocabulary, a datum longer than the
context, shapes that disagree, an unknown loss or config key) is a
:class:`~tunesmith.errors.DataError` naming ``data[i]`` and the field, raised before any
gradient is touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import DataError
from ..losses.tinker import tinker_loss
from ..models.forward import decoder_hidden_states, head_logits, output_head
from .wire import Datum

CHUNK_ROWS = 1024
"""Rows of ``[rows, vocab]`` logits materialised at once."""
MICRO_BATCH_TOKENS = 8192
"""Tokens of datums run through one forward / backward (a request may hold many more)."""


@dataclass(frozen=True)
class _Packed:
    input_ids: torch.Tensor  # [1, T] long
    position_ids: torch.Tensor  # [1, T] long
    cu_seqlens: torch.Tensor  # [n + 1] int32
    max_seqlen: int


def check_datums(data: list[Datum], *, vocab_size: int, max_context: int) -> None:
    """DataError for a datum the model cannot take (see the module docstring)."""
    if not data:
        raise DataError("forward_backward_input.data: at least one datum is needed")
    for i, d in enumerate(data):
        where = f"data[{i}]"
        n = len(d.tokens)
        if n == 0:
            raise DataError(f"{where}.model_input: empty (a datum needs at least one token)")
        if n > max_context:
            raise DataError(
                f"{where}.model_input: {n} tokens, longer than the model's context of {max_context}"
            )
        bad = next((t for t in d.tokens if not 0 <= t < vocab_size), None)
        if bad is not None:
            raise DataError(
                f"{where}.model_input: token id {bad} is outside the vocabulary (size {vocab_size})"
            )
        targets = d.loss_fn_inputs.get("target_tokens")
        if targets is None:
            raise DataError(f"{where}.loss_fn_inputs.target_tokens: missing")
        if targets.dim() not in (1, 2) or targets.shape[0] != n:
            raise DataError(
                f"{where}.loss_fn_inputs.target_tokens: shape {list(targets.shape)} does not match the "
                f"model input's {n} tokens (expected [{n}] or [{n}, K])"
            )
        if targets.dtype.is_floating_point:
            targets = targets.long()
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= vocab_size):
            raise DataError(
                f"{where}.loss_fn_inputs.target_tokens: ids must lie in [0, {vocab_size}), "
                f"got {int(targets.min())}..{int(targets.max())}"
            )
        for key, value in d.loss_fn_inputs.items():
            if key != "target_tokens" and value.shape[:1] != targets.shape[:1]:
                raise DataError(
                    f"{where}.loss_fn_inputs.{key}: shape {list(value.shape)} does not match "
                    f"target_tokens' {list(targets.shape)}"
                )


def _pack(data: list[Datum], device: torch.device) -> _Packed:
    ids, pos, cu = [], [], [0]
    for d in data:
        ids.extend(d.tokens)
        pos.extend(range(len(d.tokens)))
        cu.append(cu[-1] + len(d.tokens))
    return _Packed(
        input_ids=torch.tensor([ids], dtype=torch.long, device=device),
        position_ids=torch.tensor([pos], dtype=torch.long, device=device),
        cu_seqlens=torch.tensor(cu, dtype=torch.int32, device=device),
        max_seqlen=max(len(d.tokens) for d in data),
    )


def target_logprobs(model: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log softmax(z)[targets]`` for ``hidden [T, H]`` and ``targets [T]`` or ``[T, K]``, float32,
    differentiable; the ``[rows, V]`` logits exist :data:`CHUNK_ROWS` rows at a time."""
    head, transform = output_head(model)
    flat = targets.reshape(targets.shape[0], -1)
    if type(head) is nn.Linear and flat.shape[1] == 1:
        from ..losses.logprobs import linear_token_logprobs

        # The fused kernel training uses: never keeps the chunks' logits for backward.
        out = linear_token_logprobs(
            hidden, head.weight, flat[:, 0], bias=head.bias, chunk_size=CHUNK_ROWS, transform=transform
        )
        return out.reshape(targets.shape)
    parts = []
    for s in range(0, hidden.shape[0], CHUNK_ROWS):
        z = head_logits(model, hidden[s : s + CHUNK_ROWS]).float()
        parts.append(torch.log_softmax(z, dim=-1).gather(1, flat[s : s + CHUNK_ROWS]))
    return torch.cat(parts).reshape(targets.shape)


def micro_batches(data: list[Datum], budget: int = MICRO_BATCH_TOKENS) -> list[list[int]]:
    """Datum indices in order, cut into groups of at most ``budget`` tokens (a longer datum is a
    group of its own)."""
    groups: list[list[int]] = []
    used = budget
    for i, d in enumerate(data):
        if used + len(d.tokens) > budget:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += len(d.tokens)
    return groups


def _check_losses(data: list[Datum], loss_fn: str, loss_fn_config: dict | None) -> None:
    """Every datum's loss inputs and config, validated before any gradient is touched (a
    request is applied whole or not at all)."""
    for i, d in enumerate(data):
        shape = d.loss_fn_inputs["target_tokens"].shape
        try:
            with torch.no_grad():
                tinker_loss(loss_fn, torch.zeros(shape), d.loss_fn_inputs, loss_fn_config)
        except ValueError as exc:
            raise DataError(f"data[{i}]: {exc}") from None


def forward_backward(
    model: nn.Module,
    data: list[Datum],
    loss_fn: str,
    loss_fn_config: dict | None = None,
    *,
    forward_only: bool = False,
    micro_batch_tokens: int = MICRO_BATCH_TOKENS,
) -> tuple[list[dict[str, torch.Tensor]], dict[str, float]]:
    """(per-datum ``{"logprobs": lp}`` in ``target_tokens``' shape, summed metrics incl.
    ``loss:sum``). Back-propagates the summed loss into ``.grad`` unless ``forward_only``.

    The datums run in micro-batches of at most ``micro_batch_tokens`` tokens, each forward and
    backward on its own, so memory is bounded whatever the request's size; the loss is a sum,
    so the accumulated gradient is the whole request's. The caller checks the datums first
    (:func:`check_datums`); the losses' inputs are checked here before anything runs."""
    _check_losses(data, loss_fn, loss_fn_config)
    outputs: list[dict[str, torch.Tensor]] = [{} for _ in data]
    metrics: dict[str, float] = {}
    for group in micro_batches(data, micro_batch_tokens):
        part = [data[i] for i in group]
        for i, out in zip(group, _run_group(model, part, loss_fn, loss_fn_config, forward_only, metrics)):
            outputs[i] = out
    return outputs, metrics


def _run_group(model, data, loss_fn, loss_fn_config, forward_only, metrics) -> list[dict]:
    device = next(model.parameters()).device
    packed = _pack(data, device)
    targets = torch.cat([d.loss_fn_inputs["target_tokens"].long().reshape(len(d.tokens), -1) for d in data])
    with torch.set_grad_enabled(not forward_only):
        hidden = decoder_hidden_states(model, packed)[0]
        if len({tuple(d.loss_fn_inputs["target_tokens"].shape[1:]) for d in data}) != 1:
            lp_all = None  # ragged K: one datum at a time (row blocks of the packed hidden states)
        else:
            lp_all = target_logprobs(model, hidden, targets.to(device))
        total = None
        outputs = []
        for i, d in enumerate(data):
            lo, hi = int(packed.cu_seqlens[i]), int(packed.cu_seqlens[i + 1])
            shape = d.loss_fn_inputs["target_tokens"].shape
            if lp_all is not None:
                lp = lp_all[lo:hi].reshape(shape)
            else:
                lp = target_logprobs(model, hidden[lo:hi], targets[lo:hi].to(device)).reshape(shape)
            inputs = {k: v.to(device) for k, v in d.loss_fn_inputs.items()}
            loss, parts = tinker_loss(loss_fn, lp, inputs, loss_fn_config)
            total = loss if total is None else total + loss
            for name, value in parts.items():
                metrics[name] = metrics.get(name, 0.0) + float(value.detach())
            outputs.append({"logprobs": lp.detach().float().cpu()})
        if not forward_only and total is not None and total.requires_grad:
            total.backward()
    return outputs


def adam_step(
    optimizer: torch.optim.Optimizer,
    params: Iterable[torch.Tensor],
    *,
    learning_rate: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    grad_clip_norm: float,
) -> dict[str, float]:
    """One AdamW step (decoupled weight decay) with this request's hyper-parameters over the
    accumulated gradients, then clear them. ``grad_clip_norm`` > 0 clips the global norm first.
    Returns ``{"grad_norm": …}`` — the global gradient norm before clipping."""
    for name, value, low, high in (
        ("learning_rate", learning_rate, 0.0, None),
        ("beta1", beta1, 0.0, 1.0),
        ("beta2", beta2, 0.0, 1.0),
        ("eps", eps, 0.0, None),
        ("weight_decay", weight_decay, 0.0, None),
        ("grad_clip_norm", grad_clip_norm, 0.0, None),
    ):
        if (
            not (value == value)
            or value < low
            or (high is not None and value >= high)
            or value == float("inf")
        ):
            bound = f"[{low}, {high})" if high is not None else f">= {low}"
            raise DataError(f"adam_params.{name}: must be a finite number {bound}, got {value}")
    params = [p for p in params if p.grad is not None]
    for group in optimizer.param_groups:
        group.update(lr=learning_rate, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip_norm if grad_clip_norm > 0 else float("inf"))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"grad_norm": float(norm)}
