"""Kill-and-resume for the resume invariants, and a fork server that runs ``tunesmith …`` command
lines as real processes without paying for a Python + torch import each (:class:`ForkTrainer`;
``tests/conftest.py`` holds one warm instance for the session, the ``fork_trainer`` fixture)."""

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


def run_to_end(server: ForkTrainer, config: Path) -> str:
    """``tunesmith train config`` as a process, to the end; everything it printed."""
    rc, out = server.run(["train", str(config)], config.with_suffix(".log"))
    assert rc == 0, out
    return out


def kill_after_checkpoint(server: ForkTrainer, config: Path, run_dir: Path, step: int) -> None:
    """Start training and SIGKILL it as soon as checkpoint ``step`` is committed."""
    pid = server.start(["train", str(config)], config.with_suffix(".kill.log"))
    marker = run_dir / "checkpoints" / f"step-{step:06d}" / "COMMITTED"
    deadline = time.time() + 300
    while not marker.exists() and server.alive(pid) and time.time() < deadline:
        time.sleep(0.002)
    server.kill(pid)
    assert server.wait() == -signal.SIGKILL, "training finished before it could be killed"
    assert not (run_dir / "final").exists()


def metric_rows(run_dir: Path) -> dict[int, dict]:
    """``metrics.jsonl`` by step, without the wall-clock fields."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: {k: v for k, v in r.items() if k not in TIMING} for r in rows}


def assert_resume_matches(
    server: ForkTrainer, tmp_path: Path, cfg: dict, kill_after: int, steps: int
) -> None:
    """The invariant: uninterrupted run == killed after checkpoint ``kill_after`` + resumed,
    every metric of every step bit for bit (CPU fp32), eval rows included. Each run is its own
    process (forked by ``server``): the resumed one knows only what the killed one wrote."""
    run_to_end(server, write_config(tmp_path, "ref", cfg))
    killed = write_config(tmp_path, "killed", cfg)
    kill_after_checkpoint(server, killed, tmp_path / "killed", kill_after)
    assert "resumed from" in run_to_end(server, killed)
    expected, got = metric_rows(tmp_path / "ref"), metric_rows(tmp_path / "killed")
    assert sorted(got) == list(range(1, steps + 1))
    assert got == expected


# -- a fork server: many short training runs without paying for a Python + torch import each --


class ForkTrainer:
    """Runs ``tunesmith …`` command lines as processes forked from one warm interpreter.

    A fresh ``tunesmith train`` spends seconds importing torch, transformers and peft before its
    first step; the CLI, resume and crash-consistency tests need dozens of runs. This server (``python
    resume_harness.py``) imports them once, runs one warm-up command in-process (so lazily
    imported modules are loaded too), then forks a child per command: the child calls
    :func:`tunesmith.cli.main` with the command's arguments, its stdout and stderr going to log
    files and its stdin reading a file (or ``/dev/null``), and exits with its return code, so it
    is a real process that SIGKILL can stop at any instruction and whose output is what a user's
    terminal would show. Children run in the directory the server started in (the test
    session's). The server never touches CUDA (fork would break it); runs use the CPU.

    Protocol, one JSON line each way: ``{"argv": [...], "log": path, "err": path | null,
    "stdin": path | null, "env": {...}}`` -> ``{"pid": n}``, then, when the child ends,
    ``{"rc": code}`` (negative: killed by that signal)."""

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
        )
        ready = json.loads(self.proc.stdout.readline() or '{"rc": null}')
        if ready.get("rc") != 0:
            raise RuntimeError(f"fork server warm-up failed ({ready}); see {warm_log}")
        self.pid: int | None = None

    def start(
        self,
        argv: list[str],
        log: Path,
        *,
        err: Path | None = None,
        stdin: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> int:
        """Fork a child running ``tunesmith *argv``; its pid (one child at a time). Its stdout
        goes to ``log``, its stderr to ``err`` (``log`` when None), its stdin reads ``stdin``
        (``/dev/null`` when None), and ``env`` is added to its environment. A child a failed
        test left behind is killed first, so one server can serve a whole session."""
        self.stop()
        request = {"argv": argv, "log": str(log), "err": err and str(err), "stdin": stdin and str(stdin)}
        self.proc.stdin.write(json.dumps({**request, "env": env or {}}) + "\n")
        self.proc.stdin.flush()
        self.pid = json.loads(self.proc.stdout.readline())["pid"]
        return self.pid

    def wait(self, timeout: float | None = None) -> int:
        """The running child's exit code (negative: the signal that killed it). A child still
        running after ``timeout`` seconds is killed and :class:`TimeoutError` raised."""
        if timeout is not None and self.pid is not None:
            deadline = time.monotonic() + timeout
            while self.alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.alive(self.pid):
                self.stop()
                raise TimeoutError(f"the child did not end within {timeout} s; killed")
        rc = json.loads(self.proc.stdout.readline())["rc"]
        self.pid = None
        return rc

    def run(self, argv: list[str], log: Path, **kw) -> tuple[int, str]:
        """Run to the end: (exit code, everything it printed to ``log``); ``kw`` as for
        :meth:`start`."""
        self.start(argv, log, **kw)
        return self.wait(), log.read_text()

    @staticmethod
    def alive(pid: int) -> bool:
        """The server reaps its child as soon as it ends, so a dead child's pid is gone."""
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False

    @staticmethod
    def kill(pid: int) -> None:
        """SIGKILL our own child, by pid (a child that already ended is left alone)."""
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self, sig: int = signal.SIGKILL, grace_s: float = 20.0) -> int | None:
        """Send ``sig`` to the running child, if any, and reap it: its exit code (None: no
        child). A child still alive ``grace_s`` after another signal than SIGKILL is killed."""
        if self.pid is None:
            return None
        if sig != signal.SIGKILL and self.alive(self.pid):
            os.kill(self.pid, sig)
            deadline = time.monotonic() + grace_s
            while self.alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        self.kill(self.pid)
        return self.wait()

    def close(self) -> None:
        self.stop()  # a child a failed test left running
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

    rc = _in_child(lambda: cli.main(warm_argv), {"log": warm_log}, fork=False)
    out.write(json.dumps({"rc": rc}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _in_child(lambda req=req: cli.main(req["argv"]), req, fork=True)
        out.write(json.dumps({"pid": pid}) + "\n")
        out.flush()
        _, status = os.waitpid(pid, 0)
        out.write(json.dumps({"rc": os.waitstatus_to_exitcode(status)}) + "\n")
        out.flush()


def _in_child(main, req: dict, fork: bool) -> int:
    """Run ``main()`` with stdout (fd 1) sent to ``req["log"]``, stderr (fd 2) to ``req["err"]``
    (or the log) and, in a forked child, stdin (fd 0) reading ``req["stdin"]`` (or /dev/null:
    never the server's protocol pipe) and ``req["env"]`` in the environment; there, exit with
    its code instead of returning (never back into the server's loop)."""
    import traceback

    saved = [os.dup(1), os.dup(2)]
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) if req.get("err") else fd
    os.dup2(fd, 1)
    os.dup2(err, 2)
    os.close(fd)
    if err != fd:
        os.close(err)
    if fork:
        src = os.open(req.get("stdin") or os.devnull, os.O_RDONLY)
        os.dup2(src, 0)
        os.close(src)
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # not the server's buffered reader
        os.environ.update(req.get("env") or {})
    try:
        rc = main() or 0  # as sys.exit(main()) reads a None
    except SystemExit as exc:  # what the interpreter makes of it: None -> 0, a message -> 1
        rc = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
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
