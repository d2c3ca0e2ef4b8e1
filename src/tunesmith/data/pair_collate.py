"""Padding-free collation of preference rows that share their prompt.

Each :class:`~tunesmith.data.preference.PairItem` becomes one segment ``[prompt | first |
second]`` of a flat ``[1, T]`` row. Position ids run ``0..P+A-1`` through the first answer and
*restart at P* for the second, and ``branches`` tells the varlen attention
(:mod:`tunesmith.models.attention`) that the second answer sees the prompt but not the first —
so each answer's hidden states equal those of ``prompt + answer`` alone, with the prompt
computed once.

Sequences are numbered ``2i`` (first answer of item i) and ``2i + 1`` (second answer).
``target_positions`` are the flat positions whose hidden state predicts a supervised token: the
first token of *both* answers is predicted from the last prompt position.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from .preference import PairItem


@dataclass
class PairBatch:
    input_ids: torch.Tensor  # [1, T] long
    position_ids: torch.Tensor  # [1, T] long
    cu_seqlens: torch.Tensor  # [n + 1] int32, one segment per item
    max_seqlen: int
    branches: tuple  # ((prompt_len, first_len), ...) per segment, for the attention
    target_positions: torch.Tensor  # [N] long
    target_ids: torch.Tensor  # [N] long
    target_seq: torch.Tensor  # [N] long, sequence id 2i / 2i+1 of each target
    answer_tokens: torch.Tensor  # [2n] float, tokens per answer
    last_positions: torch.Tensor  # [2n] long, flat position of each answer's last token
    margins: torch.Tensor  # [n] float
    labels: torch.Tensor  # [n] bool (KTO: first answer desirable)
    ref_logps: torch.Tensor | None  # [2n] float, precomputed reference log-probs (or None)
    n_items: int

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    def to(self, device) -> PairBatch:
        values = {}
        for f in fields(self):
            v = getattr(self, f.name)
            values[f.name] = v.to(device, non_blocking=True) if torch.is_tensor(v) else v
        return PairBatch(**values)


def collate_pairs(items: list[PairItem]) -> PairBatch:
    """Concatenate rendered pair rows into one padding-free :class:`PairBatch`."""
    ids, pos, cu, branches = [], [], [0], []
    tpos, tids, tseq, lens, last = [], [], [], [], []
    offset = 0
    for i, item in enumerate(items):
        p, a, b = len(item.prompt_ids), len(item.first_ids), len(item.second_ids)
        ids += item.prompt_ids + item.first_ids + item.second_ids
        pos += list(range(p + a)) + list(range(p, p + b))
        branches.append((p, a))
        for seq, start, answer in (
            (2 * i, offset + p, item.first_ids),
            (2 * i + 1, offset + p + a, item.second_ids),
        ):
            # token j of the answer is predicted at flat position start + j - 1, except j = 0,
            # which both answers predict from the prompt's last token.
            tpos += [offset + p - 1] + list(range(start, start + len(answer) - 1))
            tids += answer
            tseq += [seq] * len(answer)
            lens.append(len(answer))
            last.append(start + len(answer) - 1)
        offset += p + a + b
        cu.append(offset)
    refs = [it.ref for it in items]
    ref = (
        torch.tensor([x for r in refs for x in r], dtype=torch.float32)
        if items and all(r is not None for r in refs)
        else None
    )
    return PairBatch(
        input_ids=torch.tensor([ids], dtype=torch.long),
        position_ids=torch.tensor([pos], dtype=torch.long),
        cu_seqlens=torch.tensor(cu, dtype=torch.int32),
        max_seqlen=max((it.n_tokens for it in items), default=0),
        branches=tuple(branches),
        target_positions=torch.tensor(tpos, dtype=torch.long),
        target_ids=torch.tensor(tids, dtype=torch.long),
        target_seq=torch.tensor(tseq, dtype=torch.long),
        answer_tokens=torch.tensor(lens, dtype=torch.float32),
        last_positions=torch.tensor(last, dtype=torch.long),
        margins=torch.tensor([it.margin for it in items], dtype=torch.float32),
        labels=torch.tensor([it.label for it in items], dtype=torch.bool),
        ref_logps=ref,
        n_items=len(items),
    )
