"""A single process runs the distributed code path with world size 1 and no process group:
the collectives return this process's values, and the Trainer's accumulate / evaluate / save
(written once) give the single-process results on a toy model worked out by hand."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.distributed as dist
from torch import nn

from tunesmith.config.schema import TrainConfig
from tunesmith.engine import checkpoint as ckpt
from tunesmith.engine import distributed
from tunesmith.engine.distributed import DistContext, LossForward
from tunesmith.engine.loop import Trainer
from tunesmith.engine.parts import MethodParts
from tunesmith.engine.runtime import rng_state

ONE = DistContext()


def test_collectives_with_one_rank_return_this_process_values():
    assert not ONE.active and not dist.is_initialized()
    assert distributed.window_totals(ONE, torch.device("cpu"), 7, 3) == (7, 3)
    head, sums = distributed.sum_over_ranks(ONE, torch.device("cpu"), [1.5, 4], {"b": 2.0, "a": 1.0})
    assert head == [1.5, 4] and sums == {"b": 2.0, "a": 1.0}
    assert distributed.gather_objects(ONE, {"x": 1}) == [{"x": 1}]
    tensors = {"w": torch.ones(2)}
    assert distributed.gather_full(ONE, tensors)["w"] is tensors["w"]  # nothing sharded, nothing copied
    state = {"state": {0: {"exp_avg": torch.zeros(2)}}, "param_groups": []}
    assert distributed.full_optimizer_state(ONE, state) is state
    assert distributed.shard_optimizer_state(ONE, state, None) is state
    saved = distributed.gather_rng_state(ONE)
    assert "ranks" not in saved and torch.equal(saved["torch"], rng_state()["torch"])
    model = nn.Linear(2, 1)
    runner = distributed.wrap(model, lambda m, b: m(b).sum(), ONE, torch.device("cpu"), "fp32")
    assert type(runner) is LossForward and runner.model is model


# -- a toy method: item i holds one row x_i; its loss is (w · x_i)², counted as one unit --------
X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, -1.0]])


@dataclass
class _Item:
    index: int

    @property
    def input_ids(self):
        return [0]


@dataclass
class _Batch:
    x: torch.Tensor

    @property
    def n_tokens(self) -> int:
        return self.x.shape[0]

    def to(self, device):
        return _Batch(self.x.to(device))


def _loss(model, batch):
    loss = model(batch.x).square().sum()
    return loss, {"n": batch.n_tokens, "sq": loss.detach()}


def _trainer(tmp_path) -> Trainer:
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -1.0]]))
    items = [_Item(i) for i in range(4)]
    parts = MethodParts(
        loss_fn=_loss,
        collate=lambda its: _Batch(X[[it.index for it in its]]),
        batch_count=lambda b: b.n_tokens,
        perplexity=False,
    )
    return Trainer(
        model=model,
        parts=parts,
        items=items,
        units=[[0], [1], [2], [3]],
        eval_items=items,
        eval_units=[[0], [1]],
        cfg=TrainConfig(batch_size=2, grad_accum=2, max_steps=1, lr=0.1, warmup_steps=0),
        out_dir=tmp_path,
        device=torch.device("cpu"),
        dtype="fp32",
        state_extra={"grad_accum": 2},
    )


def test_accumulate_normalises_by_the_window_count(tmp_path):
    """w = [0.5, −1]: w·x = [0.5, −2, −0.5, 2.5], losses [0.25, 4, 0.25, 6.25], sum 10.75 over
    the window's 4 units. ∂/∂w of Σ (w·x)² / 4 = Σ 2 (w·x) x / 4
    = ([1, 0] + [0, −8] + [−1, −1] + [15, −5]) / 4 = [15, −14] / 4 = [3.75, −3.5]."""
    trainer = _trainer(tmp_path)
    assert type(trainer.runner) is LossForward
    acc = trainer.accumulate(0)
    assert acc["n"] == 4 and acc["tokens"] == 4
    assert acc["loss_sum"] == pytest.approx(10.75) and acc["sums"]["sq"] == pytest.approx(10.75)
    assert trainer.model.weight.grad.tolist() == [pytest.approx([3.75, -3.5])]


def test_evaluate_averages_over_the_held_out_units(tmp_path):
    """Eval units 0 and 1: (0.25 + 4) / 2 = 2.125."""
    trainer = _trainer(tmp_path)
    ev = trainer.evaluate(0)
    assert ev["eval_loss"] == pytest.approx(2.125) and ev["eval_tokens"] == 2
    assert trainer.model.training


def test_save_writes_the_single_process_format_and_restores(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.train_step(0)
    weight = trainer.model.weight.detach().clone()
    path = trainer.save(1)
    data = ckpt.load_checkpoint(path)
    assert "ranks" not in data["rng"] and data["state"] == {"step": 1, "grad_accum": 2}
    assert torch.equal(data["trainable"]["weight"], weight)
    fresh = _trainer(tmp_path)
    assert not torch.equal(fresh.model.weight, weight)
    assert fresh.restore(path) == 1
    assert torch.equal(fresh.model.weight, weight)
    assert fresh.optimizer.state_dict()["state"][0]["exp_avg"].tolist() == (
        trainer.optimizer.state_dict()["state"][0]["exp_avg"].tolist()
    )
