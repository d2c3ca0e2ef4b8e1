"""Batch surgery on a left-padded KV cache: merge newcomers in, drop finished rows, trim padding.

The running batch is a ``transformers.DynamicCache`` whose every layer holds keys/values of shape
``[B, H_kv, L, D]`` plus a 2-D attention mask ``[B, L]`` (1 = real token). Sequences are
left-padded: row ``b``'s real tokens occupy the last ``mask[b].sum()`` columns. Rotary positions
come from explicit ``position_ids`` (each row counts its own real tokens), so shifting a row's
tokens right by adding padding on the left changes nothing it computes; only the mask grows.
"""

from __future__ import annotations

import torch


def layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(keys, values)] per layer, each ``[B, H_kv, L, D]``."""
    out = []
    for layer in cache.layers:
        if type(layer).__name__ != "DynamicLayer":
            raise TypeError(f"unsupported KV cache layer {type(layer).__name__} (need full-attention layers)")
        out.append((layer.keys, layer.values))
    return out


def build(kv: list[tuple[torch.Tensor, torch.Tensor]]):
    """A DynamicCache holding exactly ``kv`` (full-attention layers)."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=kv)


def empty():
    """A cache of full-attention layers, created lazily by the first forward pass."""
    from transformers import DynamicCache

    return DynamicCache()


def _left_pad(x: torch.Tensor, extra: int, dim: int) -> torch.Tensor:
    if extra == 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x.new_zeros(shape), x], dim=dim)


def merge(cache_a, mask_a: torch.Tensor | None, cache_b, mask_b: torch.Tensor):
    """Concatenate batch ``b`` after batch ``a`` (either may be longer); returns (cache, mask)."""
    if cache_a is None or mask_a is None or mask_a.shape[0] == 0:
        return cache_b, mask_b
    la, lb = mask_a.shape[1], mask_b.shape[1]
    length = max(la, lb)
    kv = []
    for (ka, va), (kb, vb) in zip(layers(cache_a), layers(cache_b)):
        kv.append(
            (
                torch.cat([_left_pad(ka, length - la, 2), _left_pad(kb, length - lb, 2)]),
                torch.cat([_left_pad(va, length - la, 2), _left_pad(vb, length - lb, 2)]),
            )
        )
    mask = torch.cat([_left_pad(mask_a, length - la, 1), _left_pad(mask_b, length - lb, 1)])
    return build(kv), mask


def select(cache, mask: torch.Tensor, rows: list[int]):
    """Keep ``rows`` (in that order) and drop columns that are padding in every kept row."""
    if not rows:
        return None, None
    idx = torch.tensor(rows, dtype=torch.long, device=mask.device)
    mask = mask.index_select(0, idx)
    used = mask.any(0).nonzero()
    start = int(used[0]) if len(used) else mask.shape[1]
    mask = mask[:, start:]
    kv = [
        (k.index_select(0, idx)[:, :, start:], v.index_select(0, idx)[:, :, start:]) for k, v in layers(cache)
    ]
    return build(kv), mask
