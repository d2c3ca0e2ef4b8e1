"""2 processes (torchrun, gloo, CPU) train exactly like 1 process with the same global batch,
with DDP and with FSDP2; a SIGKILLed rank stops the launcher and the run resumes exactly.

One process with ``grad_accum 2`` is the reference; two ranks with ``grad_accum 1`` see the
same 2 micro-batches per step (engine.distributed). ``max_tokens_per_forward`` splits some
micro-batches into two passes, so ranks run different numbers of passes (the FSDP padding path).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tunesmith.run import prepare, train

STEPS = 8
TOL = 1e-5


def _config(tmp_path: Path, model: Path, data: tuple, name: str, **train_over) -> dict:
    train_cfg = {"max_steps": STEPS, "batch_size": 2, "grad_accum": 1, "max_length": 64, "lr": 2e-3,
                 "save_every": 3, "eval_every": 4, "keep_last": 3, "threads": 1, "progress": "lines",
                 "max_tokens_per_forward": 80, "seed": 1, **train_over}
    return {"model": str(model), "data": {"train": str(data[0]), "eval": str(data[1]), "max_eval_examples": 9},
            "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
            "train": train_cfg, "output_dir": str(tmp_path / name)}


def _write(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / f"{Path(cfg['output_dir']).name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _launch(config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "tunesmith", "train", str(config), "--nproc", "2", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                            start_new_session=True)


def _rows(run_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def _assert_same_run(got_dir: Path, ref_dir: Path) -> None:
    got, ref = _rows(got_dir), _rows(ref_dir)
    assert sorted(got) == sorted(ref) == list(range(1, STEPS + 1))
    for step, r in ref.items():
        g = got[step]
        assert g["tokens"] == r["tokens"] and g["tokens_total"] == r["tokens_total"], step  # same global batch
        for key in ("loss", "accuracy", "grad_norm", "lr", "eval_loss", "eval_accuracy"):
            if key in r:
                assert abs(g[key] - r[key]) <= TOL, (step, key, g[key], r[key])
    a = load_file(got_dir / "final" / "adapter_model.safetensors")
    b = load_file(ref_dir / "final" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=TOL, msg=name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir, color_data):
    """One process, grad_accum 2: the run the 2-rank runs must reproduce."""
    tmp = tmp_path_factory.mktemp("ref")
    cfg = _config(tmp, tiny_model_dir, color_data, "ref", grad_accum=2)
    train(cfg, resume=False)
    # The data really makes ranks run different numbers of passes in some steps.
    run = prepare({**cfg, "output_dir": str(tmp / "probe")})
    t = run.trainer
    passes = [[len(t._passes([t.items[i] for i in t._micro_batch(g)])) for g in (2 * s, 2 * s + 1)]
              for s in range(STEPS)]
    assert any(a != b for a, b in passes), passes
    return tmp / "ref"


def test_ddp_two_ranks_equal_one(tmp_path, tiny_model_dir, color_data, reference):
    config = _write(tmp_path, _config(tmp_path, tiny_model_dir, color_data, "ddp", parallel="ddp"))
    proc = _launch(config)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert out.count("trained 8 steps") == 1  # rank 0 reports for the job
    _assert_same_run(tmp_path / "ddp", reference)
    info = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert info["distributed"] == {"mode": "ddp", "world_size": 2, "global_batch": 4}


def _descendants(pid: int) -> list[int]:
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, pp in parent.items() if pp in frontier]
        found += children
        frontier = children
    return found


def _rank_pid(launcher: int, rank: int) -> int | None:
    for pid in _descendants(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"TORCHELASTIC_RUN_ID" in b"".join(env):
            return pid
    return None


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_fsdp_sigkill_one_rank_then_resume_equals_one_process(tmp_path, tiny_model_dir, color_data, reference):
    config = _write(tmp_path, _config(tmp_path, tiny_model_dir, color_data, "fsdp", parallel="fsdp"))
    proc = _launch(config)
    marker = tmp_path / "fsdp" / "checkpoints" / "step-000003" / "COMMITTED"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    victim = _rank_pid(proc.pid, 1)
    assert victim is not None and proc.poll() is None, "training ended before a rank could be killed"
    workers = [p for p in _descendants(proc.pid)]
    os.kill(victim, signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)  # the launcher notices and stops the other rank
    assert proc.returncode != 0, out
    assert "distributed training stopped" in out
    assert not any(_alive(p) for p in workers), "a worker outlived the launcher"
    assert not (tmp_path / "fsdp" / "final").exists()

    resumed = _launch(config)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert "resumed from" in out
    _assert_same_run(tmp_path / "fsdp", reference)
