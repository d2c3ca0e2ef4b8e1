"""What the preference methods (``dpo``, ``kto``) share: beta, the reference model, the
reference log-prob precompute and cache, and the pair rows (rendering, units, engine parts; the
``reward`` method trains on them too). A helper module, not a method.

**Reference log-probabilities, computed once and cached by content hash.** The reference model is the *initial* model (``model.path``, plus ``adapter.init_from`` when set): before training starts it
is loaded on its own, every train and eval row is scored in fixed, data-order batches, and the
model is freed before the trainable one is loaded — so peak memory never holds two copies and
each training step saves the reference forward.

The cache is a JSON file ``reference-logps-<model hash>.json`` in ``preference.reference_cache``
(default: the run's output folder) mapping the SHA-256 of a row's token ids to its two summed
log-probs. Reruns and resumed runs read it back (the values are exactly the computed float32
numbers), so a resumed run sees bit-identical references; rows not yet in it are computed.
The model hash covers ``config.json`` and each weight file's name, size and first/last MiB —
enough to notice a different checkpoint without reading billions of bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from ..config import RunConfig
from ..config.registry import needs_reference
from ..data.pair_collate import collate_pairs
from ..data.preference import PairItem, PairRenderer
from ..engine.runtime import autocast
from ..errors import DataError
from ..models.device import resolve_device, resolve_dtype
from ..models.pair_forward import reference_logps
from .common import MethodParts, PreparedData, data_files, pack_prepared, template_name, train_eval_split

log = logging.getLogger("tunesmith")

_MIB = 1 << 20


def model_fingerprint(path: str, dtype: str) -> str:
    """Hex digest identifying the reference weights (see the module docstring) and dtype."""
    from ..models.gguf_import import resolve_model_path

    h = hashlib.sha256(dtype.encode())
    folder = Path(resolve_model_path(path))  # a GGUF file: its (content-addressed) folder
    config = folder / "config.json"
    if config.is_file():
        h.update(config.read_bytes())
    for weights in sorted(folder.glob("*.safetensors")):
        size = weights.stat().st_size
        h.update(f"{weights.name}:{size}".encode())
        with open(weights, "rb") as f:
            h.update(f.read(_MIB))
            if size > _MIB:
                f.seek(max(_MIB, size - _MIB))
                h.update(f.read(_MIB))
    return h.hexdigest()


def item_key(item: PairItem) -> str:
    """SHA-256 of a row's token ids (prompt, first answer, second answer)."""
    text = json.dumps([item.prompt_ids, item.first_ids, item.second_ids], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _batches(indices: list[int], items: list[PairItem], max_tokens: int) -> list[list[int]]:
    groups, current, used = [], [], 0
    for i in indices:
        n = items[i].n_tokens
        if current and used + n > max_tokens:
            groups.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    return groups + ([current] if current else [])


def precompute_reference(config, items: list[PairItem]) -> dict:
    """Fill ``item.ref`` for every item (from the cache or by scoring with the initial model).

    Returns stats ``{"cached": n, "computed": n, "file": path}``.
    """
    from ..models.attention import register
    from ..models.load import load_causal_lm
    from ..models.pair_forward import sequence_logps

    device = resolve_device(config.train.device)
    dtype = resolve_dtype(config.train.dtype, device)
    folder = Path(config.preference.reference_cache or config.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fingerprint = model_fingerprint(config.model.path, str(dtype))
    if config.adapter.init_from is not None:  # the initial adapter is part of the reference
        fingerprint = hashlib.sha256(
            (fingerprint + model_fingerprint(config.adapter.init_from, "")).encode()
        ).hexdigest()
    path = folder / f"reference-logps-{fingerprint[:16]}.json"
    cache = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    keys = [item_key(it) for it in items]
    missing = sorted({k: i for i, k in enumerate(keys) if k not in cache}.values())
    if missing:
        log.info(
            "reference log-probs: scoring %d rows with the initial model (%d cached)",
            len(missing),
            len(items) - len(missing),
        )
        model = load_causal_lm(
            config.model.path, device=device, trust_remote_code=config.model.trust_remote_code
        )
        if config.adapter.init_from is not None:
            from ..models.adapters import attach_adapter

            model = attach_adapter(model, config.adapter)  # exactly the model training starts from
        model.set_attn_implementation(register())
        model.eval()
        max_tokens = config.train.max_tokens_per_forward or 4 * config.train.max_length
        with torch.no_grad():
            for group in _batches(missing, items, max_tokens):
                batch = collate_pairs([items[i] for i in group]).to(device)
                with autocast(device, dtype):
                    logps = sequence_logps(model, batch, config.train.loss_chunk_size).float().cpu().tolist()
                for j, i in enumerate(group):
                    cache[keys[i]] = [logps[2 * j], logps[2 * j + 1]]
        del model
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache), encoding="utf-8")
        os.replace(tmp, path)
    for item, key in zip(items, keys):
        item.ref = (cache[key][0], cache[key][1])
    return {"cached": len(items) - len(missing), "computed": len(missing), "file": str(path)}


def precompute_wanted(config: RunConfig) -> bool:
    """Whether reference log-probs are computed up front (see the module docstring).

    With ``adapter.init_from`` (e.g. DPO after SFT) the initial policy is base + that adapter,
    so the adapter-disabled model — the plain base — is the wrong reference: references are then
    always precomputed, from the initial model with the adapter loaded (config validation refuses
    ``precompute_reference: false`` there)."""
    if not needs_reference(config):
        return False
    if config.adapter.init_from is not None:
        return True
    pre = config.preference.precompute_reference
    return config.adapter.type == "none" if pre == "auto" else bool(pre)


def render_split(config: RunConfig, tokenizer, read, render) -> tuple[list, list, dict, dict]:
    """The run's train / held-out rows (``read(paths)`` -> examples, split by
    :func:`train_eval_split`), each rendered by ``render(renderer, examples) -> (items, stats)``
    with one :class:`PairRenderer`: ``(train, evals, stats, eval_stats)``."""
    train_ex, eval_ex = train_eval_split(config, read)
    renderer = PairRenderer(tokenizer, config.train.max_length, template_name(config))
    train, stats = render(renderer, train_ex)
    evals, eval_stats = render(renderer, eval_ex)
    return train, evals, stats, eval_stats


def finish_prepare(
    config: RunConfig, train: list, evals: list, stats: dict, eval_stats: dict
) -> PreparedData:
    """Units (pair rows; packed up to 2 × max_length tokens), reference precompute, stats."""
    if not train:
        raise DataError(f"no training example in {', '.join(data_files(config.data.train))}")
    if stats["truncated"]:
        log.warning(
            "data: %d of %d training rows exceeded train.max_length=%d (prompt + answer) and were truncated",
            stats["truncated"],
            stats["examples"],
            config.train.max_length,
        )
    if precompute_wanted(config):
        stats["reference"] = precompute_reference(config, train + evals)
    # A row holds prompt + two answers, each prompt + answer <= max_length.
    return pack_prepared(
        train,
        evals,
        stats,
        eval_stats,
        size=pair_tokens,
        packing=config.train.packing,
        max_length=2 * config.train.max_length,
    )


def pair_tokens(item: PairItem) -> int:
    """Tokens of a pair row: the prompt and both answers."""
    return item.n_tokens


def pair_parts(loss_fn, **options) -> MethodParts:
    """The engine parts of a method trained on pair rows (DPO family, KTO, reward models):
    ``loss_fn`` over :func:`collate_pairs` batches, normalised per row, no perplexity;
    ``options`` are further :class:`MethodParts` fields (e.g. ``summarize``)."""
    return MethodParts(
        loss_fn=loss_fn,
        collate=collate_pairs,
        batch_count=lambda b: b.n_items,
        item_tokens=pair_tokens,
        perplexity=False,
        **options,
    )


def frozen_reference(config: RunConfig, device):
    """A frozen copy of the initial model (full fine-tuning without precomputed references)."""
    from ..models.attention import register
    from ..models.load import load_causal_lm

    ref = load_causal_lm(config.model.path, device=device, trust_remote_code=config.model.trust_remote_code)
    ref.set_attn_implementation(register())  # pair rows need the branch-aware varlen attention
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def reference_source(config: RunConfig, model):
    """None when references come with the batch or from the adapter-disabled model; else a
    frozen copy of the initial model."""
    if not needs_reference(config) or precompute_wanted(config) or config.adapter.type != "none":
        return None
    device = next(model.parameters()).device
    log.info(
        "reference: loading a frozen copy of %s (full fine-tuning, precompute_reference: false)",
        config.model.path,
    )
    return frozen_reference(config, device)


def batch_reference(model, batch, chunk: int, ref_model):
    """The batch's ``[2n]`` reference log-probs: precomputed, a frozen copy, or adapters off."""
    if batch.ref_logps is not None:
        return batch.ref_logps
    return reference_logps(model, batch, chunk, reference=ref_model)
