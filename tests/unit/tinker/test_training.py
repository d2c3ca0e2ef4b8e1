"""tinker.training: packed forward/backward over datums, micro-batching, Adam step."""

from __future__ import annotations

import pytest
import torch

from tunesmith.errors import DataError
from tunesmith.tinker.training import adam_step, check_datums, forward_backward, micro_batches
from tunesmith.tinker.wire import Datum


@pytest.fixture
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from tunesmith.models.attention import register

    m = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    m.set_attn_implementation(register())
    return m


def _datum(n: int, seed: int) -> Datum:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 300, (n + 1,), generator=g)
    w = (torch.rand(n, generator=g) > 0.3).float()
    return Datum(ids[:-1].tolist(), {"target_tokens": ids[1:], "weights": w})


DATA = [_datum(n, s) for s, n in enumerate([7, 12, 3, 20, 9])]


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_logprobs_equal_a_plain_forward_per_datum(model):
    outputs, metrics = forward_backward(model, DATA, "cross_entropy", forward_only=True)
    total = 0.0
    for d, out in zip(DATA, outputs):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([d.tokens])).logits[0].float()
        ref = torch.log_softmax(logits, -1).gather(1, d.loss_fn_inputs["target_tokens"][:, None])[:, 0]
        torch.testing.assert_close(out["logprobs"], ref, atol=1e-5, rtol=0)
        total += float(-(ref * d.loss_fn_inputs["weights"]).sum())
    assert metrics["loss:sum"] == pytest.approx(total, rel=1e-5)


def test_micro_batches_change_nothing(model):
    assert micro_batches(DATA, 16) == [[0], [1, 2], [3], [4]]
    assert micro_batches(DATA, 24) == [[0, 1, 2], [3], [4]]
    out_a, met_a = forward_backward(model, DATA, "cross_entropy", micro_batch_tokens=10**6)
    grads_a = _grads(model)
    model.zero_grad(set_to_none=True)
    out_b, met_b = forward_backward(model, DATA, "cross_entropy", micro_batch_tokens=16)
    grads_b = _grads(model)
    assert met_a["loss:sum"] == pytest.approx(met_b["loss:sum"], rel=1e-6)
    for a, b in zip(out_a, out_b):
        torch.testing.assert_close(a["logprobs"], b["logprobs"], atol=1e-6, rtol=0)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-6, rtol=1e-5)


def test_topk_targets(model):
    d = DATA[0]
    k2 = torch.stack([d.loss_fn_inputs["target_tokens"], torch.full((7,), 3)], 1)
    datum = Datum(d.tokens, {"target_tokens": k2, "weights": torch.ones(7, 2)})
    outputs, metrics = forward_backward(model, [datum], "cross_entropy", forward_only=True)
    assert outputs[0]["logprobs"].shape == (7, 2)
    single, _ = forward_backward(model, [d], "cross_entropy", forward_only=True)
    torch.testing.assert_close(outputs[0]["logprobs"][:, 0], single[0]["logprobs"], atol=1e-6, rtol=0)
    assert metrics["loss:sum"] == pytest.approx(float(-outputs[0]["logprobs"].sum()), rel=1e-6)


def test_a_bad_datum_leaves_no_gradient(model):
    bad = Datum([5, 6], {"target_tokens": torch.tensor([6, 7])})  # cross_entropy needs weights
    with pytest.raises(DataError, match=r"data\[5\].*weights"):
        forward_backward(model, [*DATA, bad], "cross_entropy", micro_batch_tokens=16)
    assert not _grads(model)


def test_check_datums_names_the_field():
    with pytest.raises(DataError, match=r"data\[0\].model_input.*context of 4"):
        check_datums([DATA[0]], vocab_size=320, max_context=4)
    with pytest.raises(DataError, match=r"data\[0\].loss_fn_inputs.target_tokens: ids"):
        check_datums(
            [Datum([1, 2], {"target_tokens": torch.tensor([1, 999])})], vocab_size=320, max_context=64
        )
    with pytest.raises(DataError, match=r"data\[0\].loss_fn_inputs.weights: shape"):
        check_datums(
            [Datum([1, 2], {"target_tokens": torch.tensor([1, 2]), "weights": torch.ones(3)})],
            vocab_size=320,
            max_context=64,
        )
    with pytest.raises(DataError, match="at least one datum"):
        check_datums([], vocab_size=320, max_context=64)


def test_adam_step_is_adamw_with_the_request_settings():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    q = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = torch.optim.AdamW([p], lr=1.0)
    ref = torch.optim.AdamW([q], lr=0.1, betas=(0.8, 0.9), eps=1e-8, weight_decay=0.01)
    for _ in range(3):
        p.grad = torch.tensor([3.0, 4.0])
        q.grad = torch.tensor([3.0, 4.0]) * min(1.0, 2.5 / 5.0)  # global norm 5 clipped to 2.5
        metrics = adam_step(
            opt, [p], learning_rate=0.1, beta1=0.8, beta2=0.9, eps=1e-8, weight_decay=0.01, grad_clip_norm=2.5
        )
        ref.step()
        assert metrics["grad_norm"] == pytest.approx(5.0)
        assert p.grad is None
    torch.testing.assert_close(p.detach(), q.detach(), atol=1e-6, rtol=1e-6)
    with pytest.raises(DataError, match="adam_params.beta1"):
        adam_step(
            opt, [p], learning_rate=0.1, beta1=1.0, beta2=0.9, eps=1e-8, weight_decay=0.0, grad_clip_norm=0.0
        )
    with pytest.raises(DataError, match="adam_params.learning_rate"):
        adam_step(
            opt,
            [p],
            learning_rate=float("nan"),
            beta1=0.9,
            beta2=0.9,
            eps=1e-8,
            weight_decay=0.0,
            grad_clip_norm=0.0,
        )
