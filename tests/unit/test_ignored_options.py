"""Options a run would otherwise ignore (or obey at a large speed cost) without a word are
warned about, naming the option (issue 20: fsdp + cpu_offload without --nproc trained
single-process silently; fp16 on a CPU ran many times slower silently)."""

from __future__ import annotations

import logging

import pytest
import torch

from tunesmith.config import load_config
from tunesmith.engine.distributed import DistContext
from tunesmith.run import Runtime, ignored_option_warnings, start_runtime


def _cfg(tmp_path, **train):
    return load_config(
        {"model": "m", "data": {"train": "t.jsonl"}, "train": train, "output_dir": str(tmp_path / "out")}
    )


def _warnings(tmp_path, device="cpu", dtype="fp32", dist=DistContext(), **train):
    rt = Runtime(tmp_path, torch.device(device), dtype, dist)
    return ignored_option_warnings(_cfg(tmp_path, **train), rt)


@pytest.mark.parametrize(
    "train, named",
    [
        ({"parallel": "fsdp"}, "train.parallel: fsdp has no effect in a single process (no sharding"),
        (
            {"parallel": "fsdp", "cpu_offload": True},
            "train.parallel: fsdp with train.cpu_offload has no effect",
        ),
        ({"parallel": "ddp"}, "train.parallel: ddp has no effect in a single process (no replicas)"),
    ],
)
def test_parallel_without_torchrun_warns_naming_the_option(tmp_path, train, named):
    (warning,) = _warnings(tmp_path, device="cuda", dtype="bf16", **train)
    assert named in warning and "--nproc N" in warning


def test_parallel_under_torchrun_is_not_warned_about(tmp_path):
    dist = DistContext(world_size=2, rank=0, local_rank=0, mode="fsdp")
    assert _warnings(tmp_path, device="cuda", dtype="bf16", dist=dist, parallel="fsdp") == []


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_precision_on_cpu_warns_with_the_speed_cost(tmp_path, dtype, monkeypatch):
    monkeypatch.setattr("tunesmith.models.device.cpu_has_amx_bf16", lambda: False)
    (warning,) = _warnings(tmp_path, dtype=dtype)
    assert f"train.dtype: {dtype} on a CPU" in warning and "17x slower" in warning
    assert "train.dtype: fp32" in warning


def test_bf16_on_a_cpu_with_amx_is_not_warned_about(tmp_path, monkeypatch):
    monkeypatch.setattr("tunesmith.models.device.cpu_has_amx_bf16", lambda: True)
    assert _warnings(tmp_path, dtype="bf16") == []
    (warning,) = _warnings(tmp_path, dtype="fp16")  # no AMX path for fp16
    assert "train.dtype: fp16 on a CPU" in warning


def test_amx_detection_reads_the_cpu_flags():
    from tunesmith.models.device import cpu_has_amx_bf16

    with open("/proc/cpuinfo") as f:
        flags = next((line.split() for line in f if line.startswith("flags")), [])
    assert cpu_has_amx_bf16() == ("amx_bf16" in flags)


def test_plain_runs_get_no_warning(tmp_path):
    assert _warnings(tmp_path) == []  # fp32 on CPU
    assert _warnings(tmp_path, device="cuda", dtype="bf16") == []
    assert _warnings(tmp_path, device="cuda", dtype="fp16") == []


def test_start_runtime_logs_them(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="tunesmith"):
        rt = start_runtime(_cfg(tmp_path, dtype="fp16", device="cpu", parallel="ddp"))
    assert rt.dtype == "fp16" and rt.device.type == "cpu"
    text = caplog.text
    assert "train.dtype: fp16 on a CPU" in text and "train.parallel: ddp has no effect" in text


def test_config_changes_name_keys_and_ignore_how_it_runs():
    """The comparison behind refusing a changed config on a complete run (tunesmith.run)."""
    import yaml

    from tunesmith.config import config_to_dict
    from tunesmith.run import config_changes

    base = load_config({"model": "m", "data": {"train": "t.jsonl"}, "train": {"lr": 1e-3}})
    recorded = yaml.safe_load(yaml.safe_dump(config_to_dict(base)))
    assert config_changes(recorded, base) == []
    other = load_config(recorded, ["train.lr=2e-3", "adapter.r=4", "train.threads=1", "train.progress=none"])
    assert config_changes(recorded, other) == ["adapter.r: 16 -> 4", "train.lr: 0.001 -> 0.002"]
    # a record from before a key existed: the key at its default is no change, set otherwise it is
    older = {**recorded, "train": {k: v for k, v in recorded["train"].items() if k != "eval_at_start"}}
    assert config_changes(older, base) == []
    assert config_changes(older, load_config(recorded, ["train.eval_at_start=true"])) == [
        "train.eval_at_start: False -> True"
    ]
