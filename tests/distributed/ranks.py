"""Helpers of the distributed tests: launch ``tunesmith train --nproc 2``, compare two runs,
find a rank's process."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

TOL = 1e-5


def write_config(cfg: dict) -> Path:
    out = Path(cfg["output_dir"])
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def launch(server, config: Path, *extra: str) -> int:
    """Start ``tunesmith train CONFIG --nproc 2``, output to ``CONFIG.log``; the launcher's pid.
    The launcher is forked from the warm ``server`` (``fork_trainer``); the torchrun it starts
    starts each rank as a fresh interpreter, as in production."""
    return server.start(["train", str(config), "--nproc", "2", *extra], config.with_suffix(".log"))


def finish(server, config: Path, timeout: float = 600) -> tuple[int, str]:
    """Wait for the launcher of ``config``: (its exit code, everything the job printed)."""
    rc = server.wait(timeout=timeout)
    return rc, config.with_suffix(".log").read_text()


def run(server, config: Path, *extra: str) -> tuple[int, str]:
    """``tunesmith train CONFIG --nproc 2`` to the end: (exit code, everything it printed)."""
    launch(server, config, *extra)
    return finish(server, config)


def rows(run_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def assert_same_run(got_dir: Path, ref_dir: Path, steps: int, keys: tuple[str, ...]) -> None:
    """Same global batch each step (token counts), every logged ``keys`` value and every final
    adapter (or, for full fine-tuning, model) tensor within TOL."""
    got, ref = rows(got_dir), rows(ref_dir)
    assert sorted(got) == sorted(ref) == list(range(1, steps + 1))
    compared = set()
    for step, r in ref.items():
        g = got[step]
        assert g["tokens"] == r["tokens"] and g["tokens_total"] == r["tokens_total"], step
        for key in keys:
            if key in r:
                # relative beyond 1: summed log-probs (~ -100) carry float32 rounding of ~1e-5
                assert abs(g[key] - r[key]) <= TOL * max(1.0, abs(r[key])), (step, key, g[key], r[key])
                compared.add(key)
    assert compared == set(keys), f"never logged: {set(keys) - compared}"
    weights = "adapter_model.safetensors"
    if not (ref_dir / "final" / weights).exists():
        weights = "model.safetensors"  # full fine-tuning
    a, b = load_file(got_dir / "final" / weights), load_file(ref_dir / "final" / weights)
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=TOL, msg=name)


def descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (Linux /proc)."""
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = [], [pid]
    while frontier:
        frontier = [p for p, pp in parent.items() if pp in frontier]
        found += frontier
    return found


def rank_pid(launcher: int, rank: int) -> int | None:
    """The torchrun worker of ``rank`` started under ``launcher`` (by its RANK variable)."""
    for pid in descendants(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and any(e.startswith(b"TORCHELASTIC_RUN_ID=") for e in env):
            return pid
    return None


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
