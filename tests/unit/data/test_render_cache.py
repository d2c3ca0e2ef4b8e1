"""The render cache: a warm run reads exactly what a cold run rendered; every input is in the key."""

from __future__ import annotations

import logging

import factory
import pytest

from tunesmith.config import load_config
from tunesmith.data import render_cache
from tunesmith.data.render import Renderer
from tunesmith.methods.common import render_examples


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_RENDER_CACHE", "1")
    monkeypatch.setenv("TUNESMITH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "render"


def _cfg(train, **data):
    return load_config(
        {"model": "m", "data": {"train": str(train), "eval_fraction": 0.25, **data}, "train": {"seed": 3}}
    )


def _render(cfg, tok, max_length=64):
    return render_examples(cfg, tok, max_length=max_length, train_on_all_tokens=False)


def _as_tuples(result):
    train, evals, stats, eval_stats = result
    rows = [[(r.input_ids, r.loss_mask, r.source, r.truncated) for r in part] for part in (train, evals)]
    return rows, stats, eval_stats


def test_warm_read_equals_cold_render_and_skips_rendering(
    tmp_path, cache, tiny_tokenizer, monkeypatch, caplog
):
    train = factory.write_jsonl(tmp_path / "t.jsonl", factory.color_chats(40, seed=1))
    cfg = _cfg(train)
    cold = _render(cfg, tiny_tokenizer)
    assert len(list(cache.glob("*.npz"))) == 1

    def boom(self, examples):
        raise AssertionError("rendered although the cache holds this data")

    monkeypatch.setattr(Renderer, "render_many", boom)
    with caplog.at_level(logging.INFO, logger="tunesmith"):
        warm = _render(cfg, tiny_tokenizer)
    assert "render cache" in caplog.text
    assert _as_tuples(warm) == _as_tuples(cold)


def test_truncation_flags_survive(tmp_path, cache, tiny_tokenizer):
    train = factory.write_jsonl(tmp_path / "t.jsonl", factory.color_chats(20, seed=1))
    full = _render(_cfg(train), tiny_tokenizer, max_length=512)
    cut = min(len(r.input_ids) for r in full[0]) - 1  # drops the last token of the shortest
    cold = _render(_cfg(train), tiny_tokenizer, max_length=cut)
    assert any(r.truncated for r in cold[0])
    assert _as_tuples(_render(_cfg(train), tiny_tokenizer, max_length=cut)) == _as_tuples(cold)


def test_every_input_is_in_the_key(tmp_path, cache, tiny_tokenizer):
    train = factory.write_jsonl(tmp_path / "t.jsonl", factory.color_chats(20, seed=1))
    other = factory.write_jsonl(tmp_path / "o.jsonl", factory.color_chats(20, seed=2))
    base = {"data": {"eval_fraction": 0.25}, "method": "sft", "seed": 3, "max_length": 64}
    key = render_cache.render_key([str(train)], base, tiny_tokenizer)
    assert key == render_cache.render_key([str(train)], dict(base), tiny_tokenizer)
    assert key != render_cache.render_key([str(other)], base, tiny_tokenizer)  # the file's bytes
    assert key != render_cache.render_key([str(train)], {**base, "seed": 4}, tiny_tokenizer)
    assert key != render_cache.render_key([str(train)], {**base, "max_length": 65}, tiny_tokenizer)
    saved = tiny_tokenizer.chat_template
    try:
        tiny_tokenizer.chat_template = saved + "{# another template #}"
        assert key != render_cache.render_key([str(train)], base, tiny_tokenizer)
    finally:
        tiny_tokenizer.chat_template = saved
    train.write_text(train.read_text() + "\n", encoding="utf-8")  # the same path, other bytes
    assert key != render_cache.render_key([str(train)], base, tiny_tokenizer)
    assert render_cache.render_key([str(tmp_path)], base, tiny_tokenizer) is None  # a folder: off


def test_changed_data_is_rendered_anew(tmp_path, cache, tiny_tokenizer):
    train = tmp_path / "t.jsonl"
    factory.write_jsonl(train, factory.color_chats(20, seed=1))
    first = _render(_cfg(train), tiny_tokenizer)
    factory.write_jsonl(train, factory.color_chats(30, seed=2))
    second = _render(_cfg(train), tiny_tokenizer)
    assert second[2]["examples"] + second[3]["examples"] == 30 != first[2]["examples"] + first[3]["examples"]
    assert len(list(cache.glob("*.npz"))) == 2


def test_damaged_entry_is_rendered_anew_and_replaced(tmp_path, cache, tiny_tokenizer, caplog):
    train = factory.write_jsonl(tmp_path / "t.jsonl", factory.color_chats(20, seed=1))
    cold = _render(_cfg(train), tiny_tokenizer)
    (entry,) = cache.glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="tunesmith"):
        again = _render(_cfg(train), tiny_tokenizer)
    assert "unreadable" in caplog.text
    assert _as_tuples(again) == _as_tuples(cold)
    assert _as_tuples(render_cache._decode(entry)) == _as_tuples(cold)


def test_off_switch_and_eviction(tmp_path, cache, tiny_tokenizer, monkeypatch):
    train = factory.write_jsonl(tmp_path / "t.jsonl", factory.color_chats(10, seed=1))
    monkeypatch.setenv("TUNESMITH_RENDER_CACHE", "0")
    _render(_cfg(train), tiny_tokenizer)
    assert not cache.exists()
    monkeypatch.setenv("TUNESMITH_RENDER_CACHE", "1")
    monkeypatch.setattr(render_cache, "KEEP", 2)
    for n in (24, 28, 32):
        _render(_cfg(train), tiny_tokenizer, max_length=n)
    assert len(list(cache.glob("*.npz"))) == 2
