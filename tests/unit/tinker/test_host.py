"""TinkerHost without HTTP: sessions end (finish or missed heartbeats) and release their models;
LoRA targets follow the LoraConfig switches; several adapters on one base stay independent."""

from __future__ import annotations

import pytest
import torch

from tunesmith.errors import DataError
from tunesmith.tinker.adapters import lora_targets
from tunesmith.tinker.host import NotFound, SessionFinished, TinkerHost
from tunesmith.tinker.store import CheckpointStore
from tunesmith.tinker.wire import Datum, ForwardBackwardRequest

LORA = {"rank": 4, "seed": 0, "train_mlp": True, "train_attn": True, "train_unembed": True}


@pytest.fixture
def host(tmp_path, tiny_model_dir):
    h = TinkerHost({"tiny": tiny_model_dir}, CheckpointStore(tmp_path / "store"), session_timeout=3600)
    yield h
    h.close()


def _create(host, owner="o", session=None, seq=0, **lora):
    session = session or host.create_session(owner)
    rid, mid = host.submit_create_model(owner, session, seq, "tiny", {**LORA, **lora}, None)
    poll = host.queue.wait(owner, rid, 60)
    assert poll.state == "done", poll.body
    return session, mid


def _fb(host, mid, owner="o"):
    d = Datum([5, 6, 7], {"target_tokens": torch.tensor([6, 7, 8]), "weights": torch.ones(3)})
    rid = host.submit_forward_backward(owner, ForwardBackwardRequest(mid, 1, "cross_entropy", {}, [d]))
    return host.queue.wait(owner, rid, 60)


def test_lora_targets_follow_the_switches(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    attn = lora_targets(model, attn=True, mlp=False, unembed=False)
    mlp = lora_targets(model, attn=False, mlp=True, unembed=False)
    head = lora_targets(model, attn=False, mlp=False, unembed=True)
    assert attn and all(".self_attn." in n for n in attn) and len(attn) == 2 * 4  # 2 layers x q,k,v,o
    assert mlp and all(".mlp." in n for n in mlp) and len(mlp) == 2 * 3
    assert head == ["lm_head"]
    assert sorted(attn + mlp + head) == lora_targets(model, attn=True, mlp=True, unembed=True)


def test_the_config_switches_decide_what_trains(host):
    _, mid = _create(host, train_mlp=False, train_unembed=False)
    m = host.model("o", mid)
    assert m.params and all(".self_attn." in k for k in m.params)
    with pytest.raises(DataError, match="nothing to train"):
        _create(host, seq=1, train_mlp=False, train_attn=False, train_unembed=False)


def test_model_seq_ids_cannot_repeat(host):
    session, _ = _create(host)
    with pytest.raises(DataError, match="exists already"):
        host.submit_create_model("o", session, 0, "tiny", LORA, None)
    with pytest.raises(DataError, match="not served"):
        host.submit_create_model("o", session, 5, "other", LORA, None)
    with pytest.raises(DataError, match="rank"):
        host.submit_create_model("o", session, 6, "tiny", {**LORA, "rank": 0}, None)


def test_finishing_a_session_unloads_its_models(host):
    session, mid = _create(host)
    other_session, other = _create(host)
    assert _fb(host, mid).state == "done"
    host.finish_session("o", session)
    with pytest.raises(SessionFinished):
        host.heartbeat("o", session)
    with pytest.raises(NotFound):
        host.model("o", mid)
    assert _fb(host, other).state == "done"  # the other session's model is untouched
    with pytest.raises(DataError, match="finished"):
        host.submit_create_model("o", session, 9, "tiny", LORA, None)


def test_missed_heartbeats_end_a_session(host):
    import time

    session, mid = _create(host)
    live, kept = _create(host)
    host.heartbeat("o", live)
    now = time.time() + host.session_timeout + 1
    host._sessions[live].last_heartbeat = now  # still beating
    assert host.reap(now) == [session]
    with pytest.raises(NotFound):
        host.model("o", mid)
    assert host.model("o", kept).model_id == kept


def test_sessions_and_models_belong_to_their_owner(host):
    session, mid = _create(host, owner="alice")
    with pytest.raises(NotFound):
        host.heartbeat("bob", session)
    with pytest.raises(NotFound):
        host.model("bob", mid)
    with pytest.raises(NotFound):
        host.submit_create_model("bob", session, 3, "tiny", LORA, None)


@pytest.mark.parametrize("arch", ["mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"])
def test_every_family_trains_and_samples(tmp_path, tiny_tokenizer, arch):
    """Each tiny model family: a LoRA on every linear (the LM head too) trains — the loss of a
    repeated datum falls — and its snapshot samples, in batches with different prompt lengths."""
    import factory

    from tunesmith.tinker.sampler import SampleSpec

    folder = tmp_path / arch
    factory.build_model(folder, arch, vocab_size=len(tiny_tokenizer))
    tiny_tokenizer.save_pretrained(folder)
    h = TinkerHost({"m": folder}, CheckpointStore(tmp_path / "store"), session_timeout=3600)
    try:
        session = h.create_session("o")
        rid, mid = h.submit_create_model("o", session, 0, "m", LORA, None)
        assert h.queue.wait("o", rid, 60).state == "done"
        m = h.model("o", mid)
        assert any("lm_head" in k for k in m.params) and any("mlp" in k for k in m.params)
        losses = []
        for _ in range(3):
            poll = _fb(h, mid)
            assert poll.state == "done", poll.body
            losses.append(poll.body[2]["loss:sum"])
            rid = h.submit_optim_step(
                "o",
                mid,
                dict(
                    learning_rate=5e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.0, grad_clip_norm=0.0
                ),
            )
            assert h.queue.wait("o", rid, 60).state == "done"
        assert losses[-1] < losses[0]
        rid = h.submit_save("o", mid, None, sampler=True, ttl=None, user_metadata=None)
        sampler_id = h.queue.wait("o", rid, 60).body["sampling_session_id"]
        sampler = h.sampler("o", sampler_id)
        spec = SampleSpec(num_samples=2, max_tokens=4, stop_token_ids=())
        rids = [
            h.submit_sample("o", sampler, p, lambda eos: spec, n_ids=2)[0] for p in ([5, 6, 7], [9], [3, 4])
        ]
        for rid in rids:
            poll = h.queue.wait("o", rid, 60)
            assert poll.state == "done", poll.body
            assert [len(s.tokens) for s in poll.body[1].sequences] == [4, 4]
    finally:
        h.close()
