"""Kill-and-resume for the resume invariants: run ``tunesmith train`` as a real process,
SIGKILL it right after a checkpoint commits, resume it, and read back its metrics rows.
:class:`ForkTrainer` runs many such processes cheaply (forked from one warm interpreter)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

TIMING = ("tokens_per_s", "step_time_s")  # wall-clock fields: the only ones allowed to differ


def write_config(tmp_path: Path, name: str, cfg: dict) -> Path:
    """``cfg`` with ``output_dir = tmp_path/name``, written to ``tmp_path/name.yaml``."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**cfg, "output_dir": str(tmp_path / name)}))
    return path


def train_cli(config: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tunesmith", "train", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )


def run_to_end(config: Path) -> str:
    proc = train_cli(config)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


def kill_after_checkpoint(config: Path, run_dir: Path, step: int) -> None:
    """Start training and SIGKILL it as soon as checkpoint ``step`` is committed."""
    proc = train_cli(config)
    marker = run_dir / "checkpoints" / f"step-{step:06d}" / "COMMITTED"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert not (run_dir / "final").exists()


def metric_rows(run_dir: Path) -> dict[int, dict]:
    """``metrics.jsonl`` by step, without the wall-clock fields."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: {k: v for k, v in r.items() if k not in TIMING} for r in rows}


def assert_resume_matches(tmp_path: Path, cfg: dict, kill_after: int, steps: int) -> None:
    """The invariant: uninterrupted run == killed after checkpoint ``kill_after`` + resumed,
    every metric of every step bit for bit (CPU fp32), eval rows included."""
    run_to_end(write_config(tmp_path, "ref", cfg))
    killed = write_config(tmp_path, "killed", cfg)
    kill_after_checkpoint(killed, tmp_path / "killed", kill_after)
    assert "resumed from" in run_to_end(killed)
    expected, got = metric_rows(tmp_path / "ref"), metric_rows(tmp_path / "killed")
    assert sorted(got) == list(range(1, steps + 1))
    assert got == expected


# -- a fork server: many short training runs without paying for a Python + torch import each --


class ForkTrainer:
    """Runs ``tunesmith …`` command lines as processes forked from one warm interpreter.

    A fresh ``tunesmith train`` spends seconds importing torch, transformers and peft before its
    first step; a crash-consistency test needs dozens of runs. This server (``python
    resume_harness.py``) imports them once, runs one warm-up command in-process (so lazily
    imported modules are loaded too), then forks a child per command: the child calls
    :func:`tunesmith.cli.main` with the command's arguments, its stdout and stderr going to a
    log file, and exits with its return code, so it is a real process that SIGKILL can stop at
    any instruction. The server never touches CUDA (fork would break it); runs use the CPU.

    Protocol, one JSON line each way: ``{"argv": [...], "log": path}`` -> ``{"pid": n}``, then,
    when the child ends, ``{"rc": code}`` (negative: killed by that signal)."""

    def __init__(self, warm_argv: list[str], warm_log: Path):
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",
            "CUDA_VISIBLE_DEVICES": "",
        }
        self.proc = subprocess.Popen(
            [sys.executable, __file__, json.dumps(warm_argv), str(warm_log)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            cwd=str(Path(__file__).parent),
        )
        ready = json.loads(self.proc.stdout.readline() or '{"rc": null}')
        if ready.get("rc") != 0:
            raise RuntimeError(f"fork server warm-up failed ({ready}); see {warm_log}")
        self.pid: int | None = None

    def start(self, argv: list[str], log: Path) -> int:
        """Fork a child running ``tunesmith *argv``; its pid (one child at a time)."""
        assert self.pid is None, "the previous child was not waited for"
        self.proc.stdin.write(json.dumps({"argv": argv, "log": str(log)}) + "\n")
        self.proc.stdin.flush()
        self.pid = json.loads(self.proc.stdout.readline())["pid"]
        return self.pid

    def wait(self) -> int:
        """The running child's exit code (negative: the signal that killed it)."""
        rc = json.loads(self.proc.stdout.readline())["rc"]
        self.pid = None
        return rc

    def run(self, argv: list[str], log: Path) -> tuple[int, str]:
        """Run to the end: (exit code, everything it printed)."""
        self.start(argv, log)
        return self.wait(), log.read_text()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _serve(warm_argv: list[str], warm_log: str) -> None:
    """The :class:`ForkTrainer` server's loop (runs in its own interpreter)."""
    # fd 1 is the protocol channel: keep it for that alone, and send anything else printed
    # to stdout (by the server or a child) to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    import torch

    torch.set_num_threads(1)
    from tunesmith import cli

    rc = _in_child(lambda: cli.main(warm_argv), warm_log, fork=False)
    out.write(json.dumps({"rc": rc}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _in_child(lambda req=req: cli.main(req["argv"]), req["log"], fork=True)
        out.write(json.dumps({"pid": pid}) + "\n")
        out.flush()
        _, status = os.waitpid(pid, 0)
        out.write(json.dumps({"rc": os.waitstatus_to_exitcode(status)}) + "\n")
        out.flush()


def _in_child(main, log: str, fork: bool) -> int:
    """Run ``main()`` with stdout and stderr (fd 1 and 2) sent to ``log``; in a forked child,
    exit with its code instead of returning (never back into the server's loop)."""
    import traceback

    saved = [os.dup(1), os.dup(2)]
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        rc = main()
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        rc = 1
    sys.stdout.flush()
    sys.stderr.flush()
    if fork:
        os._exit(rc)
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    return rc


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]), sys.argv[2])
