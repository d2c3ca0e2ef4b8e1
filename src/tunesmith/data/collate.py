"""Padding-free collation: a micro-batch becomes one flat token sequence plus boundaries.

All examples of a micro-batch are concatenated into a single row ``[1, T]`` (no padding at
all). ``position_ids`` restart at 0 for each example and ``cu_seqlens`` marks the boundaries, so
tunesmith's varlen attention (see :mod:`tunesmith.models.attention`) attends within each
example only, at the cost of the separate examples (sum of len²), never ``T²``.

The loss needs hidden states only where the *next* token is a target: ``target_positions``
(indices into the flat sequence) and ``target_ids`` (the tokens to predict there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .render import Rendered


@dataclass
class Batch:
    input_ids: torch.Tensor  # [1, T] long
    position_ids: torch.Tensor  # [1, T] long, restarting per example
    cu_seqlens: torch.Tensor  # [n_examples + 1] int32, cumulative example lengths
    max_seqlen: int
    target_positions: torch.Tensor  # [N] long, positions whose next token is supervised
    target_ids: torch.Tensor  # [N] long
    n_examples: int

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def n_targets(self) -> int:
        return int(self.target_ids.shape[0])

    def to(self, device) -> Batch:
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return Batch(
            move(self.input_ids),
            move(self.position_ids),
            move(self.cu_seqlens),
            self.max_seqlen,
            move(self.target_positions),
            move(self.target_ids),
            self.n_examples,
        )


def collate(examples: list[Rendered]) -> Batch:
    """Concatenate rendered examples into one padding-free :class:`Batch`."""
    ids, pos, cu, tpos, tids = [], [], [0], [], []
    offset = 0
    for ex in examples:
        n = len(ex.input_ids)
        ids.extend(ex.input_ids)
        pos.extend(range(n))
        for i in range(1, n):
            if ex.loss_mask[i]:
                tpos.append(offset + i - 1)
                tids.append(ex.input_ids[i])
        offset += n
        cu.append(offset)
    return Batch(
        input_ids=torch.tensor([ids], dtype=torch.long),
        position_ids=torch.tensor([pos], dtype=torch.long),
        cu_seqlens=torch.tensor(cu, dtype=torch.int32),
        max_seqlen=max((len(e.input_ids) for e in examples), default=0),
        target_positions=torch.tensor(tpos, dtype=torch.long),
        target_ids=torch.tensor(tids, dtype=torch.long),
        n_examples=len(examples),
    )
