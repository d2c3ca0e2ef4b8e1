"""In-process checks of the distributed plumbing (no processes spawned): the data split across
ranks, launcher command, and the errors a user gets for unsupported combinations."""

from __future__ import annotations

import pytest
import torch

from tunesmith.cli import main
from tunesmith.config import load_config, validate
from tunesmith.engine import distributed
from tunesmith.engine.distributed import DistContext, rank_micro_batches, rank_share
from tunesmith.errors import ConfigError


@pytest.mark.parametrize("world,accum", [(1, 1), (1, 3), (2, 1), (2, 2), (3, 2)])
def test_ranks_split_the_single_process_stream(world, accum):
    """Step s on W ranks with grad_accum A covers exactly the micro-batches of step s of one
    process with grad_accum A·W, each once: same global batch, same order."""
    for step in range(5):
        parts = [
            list(rank_micro_batches(step, accum, DistContext(world_size=world, rank=r))) for r in range(world)
        ]
        assert all(len(p) == accum for p in parts)
        merged = sorted(g for p in parts for g in p)
        single = list(rank_micro_batches(step, accum * world, DistContext()))
        assert merged == single == list(range(step * accum * world, (step + 1) * accum * world))


def test_eval_chunks_are_dealt_round_robin():
    shares = [list(rank_share(7, DistContext(world_size=3, rank=r))) for r in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    assert list(rank_share(7, DistContext())) == list(range(7))


def test_single_process_ignores_parallel_setting(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx, device = distributed.init_distributed("fsdp", torch.device("cpu"))
    assert not ctx.active and ctx.is_main and device == torch.device("cpu")


def test_launched_ranks_need_a_parallel_mode(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="train.parallel"):
        distributed.init_distributed("none", torch.device("cpu"))


def test_nproc_without_parallel_mode_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: m\ndata: {train: t.jsonl}\n")
    assert main(["train", str(cfg), "--nproc", "2"]) == 2
    assert "train.parallel" in capsys.readouterr().err


def test_cpu_offload_needs_fsdp_on_cuda():
    base = {"model": "m", "data": {"train": "t.jsonl"}}
    with pytest.raises(ConfigError, match="cpu_offload"):
        validate(load_config({**base, "train": {"cpu_offload": True, "parallel": "ddp"}}))
    with pytest.raises(ConfigError, match="cpu_offload"):
        validate(load_config({**base, "train": {"cpu_offload": True, "parallel": "fsdp", "device": "cpu"}}))


def test_torchrun_command_runs_this_package():
    cmd = distributed.torchrun_command(2, ["train", "c.yaml", "--set=train.parallel=ddp"])
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert "--nproc-per-node=2" in cmd
    assert cmd[-5:] == ["-m", "tunesmith", "train", "c.yaml", "--set=train.parallel=ddp"]


def test_fsdp_refuses_bitsandbytes_4bit_weights():
    """QLoRA + FSDP2: bitsandbytes' packed 4-bit weights cannot be sharded -> ConfigError
    naming the parameter, raised before any process group is needed."""
    bnb = pytest.importorskip("bitsandbytes")
    layer = bnb.nn.Linear4bit(64, 64, quant_type="nf4")
    layer.load_state_dict(torch.nn.Linear(64, 64).state_dict())
    model = torch.nn.Sequential(layer.to("cpu"))
    assert type(model[0].weight).__name__ == "Params4bit"
    ctx = DistContext(world_size=2, rank=0, mode="fsdp")
    with pytest.raises(ConfigError, match="QLoRA with FSDP2 is not supported.*0.weight|0.weight.*QLoRA"):
        distributed.wrap(model, lambda m, b: None, ctx, torch.device("cpu"), "fp32")


@pytest.mark.parametrize("method,extra", [("grpo", {}), ("distill", {"distill": {"mode": "on_policy"}})])
def test_fsdp_refuses_methods_that_sample_in_the_step(method, extra):
    cfg = {"model": "m", "method": method, "data": {"train": "t.jsonl"}, **extra}
    with pytest.raises(ConfigError, match="parallel: ddp"):
        validate(load_config({**cfg, "train": {"parallel": "fsdp"}}))


def test_fsdp_refuses_qlora_in_the_config():
    with pytest.raises(ConfigError, match="bitsandbytes does not support FSDP2"):
        validate(
            load_config(
                {
                    "model": "m",
                    "data": {"train": "t.jsonl"},
                    "adapter": {"type": "qlora"},
                    "train": {"parallel": "fsdp"},
                }
            )
        )
