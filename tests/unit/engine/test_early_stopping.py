"""Early stopping on the eval loss and keep_best: the rules on constructed eval-loss sequences
(engine.selection), then the trainer on a tiny model whose evaluations return a constructed
sequence: where it stops, which checkpoint becomes the final weights, and that both survive a
crash and resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tunesmith import rundir
from tunesmith.engine import checkpoint as ckpt
from tunesmith.engine.selection import Selection
from tunesmith.errors import ConfigError

# ---- the rules ------------------------------------------------------------------------------


def run_sequence(selection: Selection, losses: dict[int, float]) -> int | None:
    """Feed evaluations in step order until one says stop; the step it stopped at."""
    for step, loss in sorted(losses.items()):
        if selection.observe(step, loss).stop:
            return step
    return None


def test_stops_after_patience_evaluations_without_improvement_by_min_delta():
    # min_delta 0.01: 0.9 improves on 1.0; 0.895 is a new best but not an improvement (bad 1);
    # 0.95 is neither (bad 2 = patience): stop at step 40, best step 30.
    s = Selection(patience=2, min_delta=0.01)
    assert run_sequence(s, {10: 1.0, 20: 0.9, 30: 0.895, 40: 0.95, 50: 0.5}) == 40
    assert (s.best_step, s.best_loss, s.bad_evals, s.stopped_at) == (30, 0.895, 2, 40)


def test_an_improvement_resets_the_count():
    s = Selection(patience=2, min_delta=0.0)
    losses = {1: 1.0, 2: 1.1, 3: 0.9, 4: 0.95, 5: 0.9, 6: 0.7, 7: 0.8, 8: 0.8}
    # 2: bad 1; 3 improves (reset); 4: bad 1; 5 equals the best, no improvement: bad 2 -> stop
    assert run_sequence(s, losses) == 5
    assert s.best_step == 3


def test_without_patience_it_only_tracks_the_best():
    s = Selection()
    assert run_sequence(s, {1: 3.0, 2: 1.0, 3: 1.0, 4: 2.0, 5: float("nan")}) is None
    assert (s.best_step, s.best_loss) == (2, 1.0)  # the earliest of equal losses


def test_nan_is_never_best_nor_an_improvement():
    s = Selection(patience=1)
    assert s.observe(1, float("nan")).stop  # the first evaluation NaN: no improvement
    assert s.best_step is None


def test_state_round_trips_through_json():
    s = Selection(patience=3, min_delta=0.1)
    run_sequence(s, {5: 2.0, 10: 1.95})
    again = Selection(patience=3, min_delta=0.1)
    again.restore(json.loads(json.dumps(s.state())))
    assert again == s
    assert run_sequence(again, {15: 1.99, 20: 1.97}) == 20 and again.best_step == 10


# ---- the trainer ----------------------------------------------------------------------------

STEPS = 20


def config(model_dir, data, out, **train) -> dict:
    train_data, heldout = data
    return {
        "model": str(model_dir),
        "data": {"train": str(train_data), "eval": str(heldout)},
        "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "train": {
            "max_steps": STEPS,
            "batch_size": 4,
            "max_length": 64,
            "lr": 3e-3,
            "eval_every": 2,
            "save_every": 4,
            "keep_last": 1,
            "progress": "none",
            **train,
        },
        "output_dir": str(out),
    }


def prepared(cfg: dict, losses: dict[int, float]):
    """The run of ``cfg`` whose evaluation at step s returns ``losses[s]``."""
    from tunesmith.run import prepare

    run = prepare(cfg)
    run.trainer.evaluate = lambda step=None: {"eval_loss": losses[step]}
    return run


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def saved_trainable(out, step) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(rundir.RunDir(out).checkpoint(step))["trainable"]


def steps_logged(out) -> list[int]:
    return [r["step"] for r in rundir.RunDir(out).read_metrics()]


# eval at 2, 4, ... ; best 0.7 at step 6; 8, 10 and 12 are not below 0.7 - 0.05: stop at 12
LOSSES = {2: 1.0, 4: 0.8, 6: 0.7, 8: 0.68, 10: 0.9, 12: 0.75, **dict.fromkeys(range(14, STEPS + 1, 2), 0.1)}


def test_early_stopping_stops_at_the_right_step_and_keeps_the_best(tiny_model_dir, color_data, tmp_path):
    out = tmp_path / "run"
    cfg = config(
        tiny_model_dir, color_data, out, early_stopping={"patience": 3, "min_delta": 0.05}, keep_best=True
    )
    run = prepared(cfg, LOSSES)
    result = run.trainer.fit()
    assert (result.stopped_early_at, result.steps) == (12, 12)
    # 0.68 at step 8 is the lowest loss (a new best, though not an improvement by min_delta)
    assert (result.best_step, result.best_eval_loss, result.final_from_step) == (8, 0.68, 8)
    assert steps_logged(out) == list(range(1, 13))
    # checkpoints: the stop step, and the best one kept through rotation (keep_last 1)
    assert [rundir.step_of(p) for p in ckpt.list_checkpoints(rundir.RunDir(out).checkpoints)] == [8, 12]
    want = saved_trainable(out, 8)
    got = trainable(run.model)
    assert set(got) == set(want) and all(torch.equal(got[n], want[n]) for n in want)
    last = saved_trainable(out, 12)
    assert any(not torch.equal(last[n], want[n]) for n in want)  # the last step's weights differ


def test_keep_best_without_early_stopping_runs_to_the_end(tiny_model_dir, color_data, tmp_path):
    out = tmp_path / "run"
    losses = {s: 1.0 + abs(s - 10) / 10 for s in range(2, STEPS + 1, 2)}  # lowest at step 10
    run = prepared(config(tiny_model_dir, color_data, out, keep_best=True), losses)
    result = run.trainer.fit()
    assert (result.stopped_early_at, result.steps, result.best_step) == (None, STEPS, 10)
    steps = [rundir.step_of(p) for p in ckpt.list_checkpoints(rundir.RunDir(out).checkpoints)]
    assert steps == [10, STEPS]  # step 10 is not a save_every step: written because it was best
    want, got = saved_trainable(out, 10), trainable(run.model)
    assert all(torch.equal(got[n], want[n]) for n in want)


class Crash(Exception):
    pass


def crash_after_checkpoint(run, step: int) -> None:
    save = run.trainer.save

    def save_then_crash(done):
        path = save(done)
        if done == step:
            raise Crash(done)
        return path

    run.trainer.save = save_then_crash


@pytest.mark.parametrize("crash_at", [4, 8])
def test_early_stopping_and_the_best_survive_a_crash_and_resume(
    tiny_model_dir, color_data, tmp_path, crash_at
):
    kw = {"early_stopping": {"patience": 3, "min_delta": 0.05}, "keep_best": True}
    ref_out, out = tmp_path / "ref", tmp_path / "run"
    ref = prepared(config(tiny_model_dir, color_data, ref_out, **kw), LOSSES)
    expected = ref.trainer.fit()

    first = prepared(config(tiny_model_dir, color_data, out, **kw), LOSSES)
    crash_after_checkpoint(first, crash_at)
    with pytest.raises(Crash):
        first.trainer.fit()
    again = prepared(config(tiny_model_dir, color_data, out, **kw), LOSSES)
    got = again.trainer.fit(ckpt.load_newest_good(rundir.RunDir(out).checkpoints))
    assert got.resumed_from == crash_at
    for key in ("stopped_early_at", "steps", "best_step", "best_eval_loss", "final_from_step"):
        assert getattr(got, key) == getattr(expected, key), key

    def rows(o):
        drop = ("tokens_per_s", "step_time_s")
        return [{k: v for k, v in r.items() if k not in drop} for r in rundir.RunDir(o).read_metrics()]

    assert rows(out) == rows(ref_out)
    want, have = trainable(ref.model), trainable(again.model)
    assert all(torch.equal(want[n], have[n]) for n in want)

    # run once more: the run had stopped early, so nothing trains and the best is reloaded
    third = prepared(config(tiny_model_dir, color_data, out, **kw), LOSSES)
    done = third.trainer.fit(ckpt.load_newest_good(rundir.RunDir(out).checkpoints))
    assert (done.stopped_early_at, done.best_step, done.final_from_step) == (12, 8, 8)
    assert steps_logged(out) == list(range(1, 13))
    have = trainable(third.model)
    assert all(torch.equal(want[n], have[n]) for n in want)


def test_changing_the_selection_settings_refuses_to_resume(tiny_model_dir, color_data, tmp_path):
    out = tmp_path / "run"
    first = prepared(config(tiny_model_dir, color_data, out, keep_best=True), LOSSES)
    crash_after_checkpoint(first, 4)
    with pytest.raises(Crash):
        first.trainer.fit()
    other = prepared(config(tiny_model_dir, color_data, out, keep_best=True, early_stopping={}), LOSSES)
    with pytest.raises(ckpt.CheckpointError, match="'selection'"):
        other.trainer.fit(ckpt.load_newest_good(rundir.RunDir(out).checkpoints))


def test_early_stopping_without_held_out_examples_is_a_config_error(tiny_model_dir, color_data, tmp_path):
    from tunesmith.run import prepare

    cfg = config(tiny_model_dir, color_data, tmp_path / "run", early_stopping={})
    cfg["data"] = {"train": str(color_data[0]), "eval_fraction": 0}
    with pytest.raises(ConfigError, match="no held-out data"):
        prepare(cfg)


def test_a_missing_best_checkpoint_is_a_clear_error(tiny_model_dir, color_data, tmp_path):
    out = tmp_path / "run"
    run = prepared(config(tiny_model_dir, color_data, out, keep_best=True, max_steps=4), {2: 1.0, 4: 2.0})
    run.trainer.load_best = lambda: None  # train without loading, then damage the best checkpoint
    run.trainer.fit()
    (rundir.RunDir(out).checkpoint(2) / "trainable.safetensors").write_bytes(b"x")
    del run.trainer.load_best
    with pytest.raises(
        ckpt.CheckpointError, match="keep_best: cannot read the best checkpoint .*step-000002"
    ):
        run.trainer.load_best()
    assert not math.isnan(run.trainer.selection.best_loss)
