from __future__ import annotations

import random

import torch

from tunesmith.data.collate import collate
from tunesmith.data.pack import best_fit_decreasing, make_units, micro_batches
from tunesmith.data.render import Rendered


def test_best_fit_decreasing_is_valid_tight_and_deterministic():
    rng = random.Random(0)
    lengths = [rng.randint(5, 400) for _ in range(500)]
    bins = best_fit_decreasing(lengths, 512)
    assert sorted(i for b in bins for i in b) == list(range(500))
    assert all(sum(lengths[i] for i in b) <= 512 for b in bins)
    lower_bound = -(-sum(lengths) // 512)
    assert len(bins) <= lower_bound * 1.05 + 1  # within 5% of the volume bound
    assert bins == best_fit_decreasing(lengths, 512)


def test_best_fit_prefers_the_tightest_bin():
    # Longest first: 8 -> bin A (2 free), 6 -> bin B (4 free), 5 -> bin C (5 free);
    # 3 fits B and C and goes to B, the tighter one.
    assert best_fit_decreasing([8, 5, 6, 3], 10) == [[0], [2, 3], [1]]
    assert best_fit_decreasing([6, 4, 4, 6], 10) == [[0, 1], [2, 3]]


def test_micro_batches_cover_each_epoch_once_and_vary_by_epoch():
    units = make_units([10] * 20, packing=False, max_length=64)
    e0 = micro_batches(units, 8, seed=1, epoch=0)
    e1 = micro_batches(units, 8, seed=1, epoch=1)
    assert [len(b) for b in e0] == [8, 8, 4]
    assert sorted(i for b in e0 for i in b) == list(range(20)) and e0 != e1
    assert e0 == micro_batches(units, 8, seed=1, epoch=0)


def test_collate_boundaries_and_targets():
    a = Rendered([5, 6, 7], [0, 1, 1], "a")
    b = Rendered([8, 9], [1, 1], "b")  # a mask on token 0 is ignored: nothing predicts it
    batch = collate([a, b])
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    assert batch.cu_seqlens.tolist() == [0, 3, 5] and batch.max_seqlen == 3
    # position 2 (token 7) must not predict token 8 of the next example
    assert batch.target_positions.tolist() == [0, 1, 3]
    assert batch.target_ids.tolist() == [6, 7, 9]
    assert batch.target_ids.dtype == torch.long
