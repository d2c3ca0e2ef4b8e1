"""Running a python grader's untrusted ``grade(sample, item)`` outside the caller's process.

The caller's process never imports, compiles or executes the grader's source. Each batch of
samples goes to one child interpreter (``python -I``, code in :mod:`.sandbox_child`) that runs
the source once and grades the samples in order, so a reinforcement step with hundreds of
samples pays the process start-up once per batch, not once per sample.

Isolation backends (:attr:`SandboxConfig.backend`), strongest first:

``bwrap``
    `bubblewrap <https://github.com/containers/bubblewrap>`_ (Debian/Ubuntu package
    ``bubblewrap``), the unprivileged sandbox Flatpak uses: new user, mount, PID, network, IPC,
    UTS and cgroup namespaces; a fresh root file system holding only ``/usr``, ``/lib*``, a
    minimal ``/dev`` and the Python installation (read-only) plus an empty ``/tmp`` (tmpfs,
    discarded); no capabilities; cleared environment; killed when its parent dies. The grader
    cannot see the server's files, reach any network (not even loopback), or signal the
    server's processes.
``namespaces``
    Without bubblewrap, on Linux 5.12+ with unprivileged user namespaces: the child unshares
    user, mount, network, IPC, UTS and PID namespaces itself and makes every mount read-only
    (``mount_setattr``). No network, no signals to outside processes, no file changes — but the
    file tree is the server's: the grader can *read* whatever the server's user can. Opt-in.
``process``
    A plain child process with the limits below, nothing else. Opt-in only.

Every backend applies, inside the child and before the grader's code runs: ``RLIMIT_AS``
(memory), ``RLIMIT_CPU``, ``RLIMIT_FSIZE = 0`` (no file can get any content), ``RLIMIT_NOFILE``
and no core dumps; an empty working directory; an environment without the server's variables;
and a wall-clock deadline per sample enforced from the parent, which kills the whole process
group (and with it the namespaces) when it passes. ``backend="auto"`` (the default) uses
``bwrap`` and, when it is missing, refuses to run python graders unless
``allow_weaker_isolation`` is set, in which case it falls back to ``namespaces`` then
``process``.

Failures never raise into the caller: each sample gets a :class:`CaseOutcome` with a score or
an error and its kind — ``runtime`` (the grader raised or returned a non-float/NaN),
``timeout``, ``server`` (the child died, overflowed its output, broke the protocol, or no
sandbox is available). After a timeout or crash the remaining samples of the batch continue in
a fresh child; an error while loading the source fails all samples at once.
"""

from __future__ import annotations

import functools
import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import jsontext

CHILD_SOURCE_PATH = Path(__file__).with_name("sandbox_child.py")
BACKENDS = ("bwrap", "namespaces", "process")
_STDERR_TAIL = 4000
_CHILD_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "LC_ALL": "C.UTF-8",
}


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and isolation for python graders. ``timeout_s`` bounds each sample's ``grade``
    call (wall clock); ``startup_timeout_s`` bounds interpreter start plus running the module's
    top level. ``memory_mb`` is the address-space limit of the whole child."""

    backend: str = "auto"
    allow_weaker_isolation: bool = False
    timeout_s: float = 10.0
    startup_timeout_s: float = 10.0
    memory_mb: int = 2048
    open_files: int = 64
    max_line_bytes: int = 64 * 1024
    batch_size: int = 256
    bwrap_path: str | None = None  # default: ``bwrap`` on PATH


@dataclass(frozen=True)
class CaseOutcome:
    """One sample's result: ``score`` or ``error`` (with ``kind``) and its wall time."""

    score: float | None
    error: str | None = None
    kind: str | None = None  # None | "runtime" | "timeout" | "server"
    seconds: float = 0.0


class SandboxUnavailable(Exception):
    """No isolation backend that the configuration allows works on this machine."""


def run_python_grader(
    source: str, cases: list[tuple[dict, dict]], config: SandboxConfig = SandboxConfig()
) -> list[CaseOutcome]:
    """Grade every ``(sample, item)`` in ``cases`` with ``source``'s ``grade``; never raises for
    anything the grader does. Results are in the order of ``cases``."""
    if not cases:
        return []
    try:
        backend = resolve_backend(config)
    except SandboxUnavailable as exc:
        return [CaseOutcome(None, str(exc), "server")] * len(cases)
    outcomes: list[CaseOutcome] = []
    while len(outcomes) < len(cases):
        chunk = cases[len(outcomes) : len(outcomes) + config.batch_size]
        done, fatal = _run_child(backend, source, chunk, config)
        outcomes.extend(done)
        if fatal is not None:  # the source itself cannot run: every remaining case fails
            outcomes.extend([fatal] * (len(cases) - len(outcomes)))
    return outcomes


def check_source(source: str, config: SandboxConfig = SandboxConfig()) -> str | None:
    """Compile ``source`` in the sandbox (not in this process); the error text or None."""
    wrapper = (
        f"SOURCE = {source!r}\n"
        "def grade(sample, item):\n"
        "    try:\n        compile(SOURCE, '<grader>', 'exec')\n"
        "    except SyntaxError as e:\n"
        "        raise ValueError(f'SyntaxError: {e.msg} (line {e.lineno})') from None\n"
        "    return 1.0\n"
    )
    outcome = run_python_grader(wrapper, [({}, {})], config)[0]
    if outcome.error is None:
        return None
    return outcome.error.splitlines()[-1] if outcome.kind == "runtime" else outcome.error


_PROBES = {
    "bwrap": lambda config: _bwrap_works(_bwrap_binary(config)),
    "namespaces": lambda config: _namespaces_work(),
    "process": lambda config: _process_works(),
}


def backend_works(name: str, config: SandboxConfig = SandboxConfig()) -> bool:
    """Whether backend ``name`` works here (probed once per process, and only when asked)."""
    return _PROBES[name](config)


def available_backends(config: SandboxConfig = SandboxConfig()) -> dict[str, bool]:
    """Which backends work here (each probed once per process)."""
    return {name: backend_works(name, config) for name in BACKENDS}


def resolve_backend(config: SandboxConfig) -> str:
    """The backend ``config`` selects on this machine; :class:`SandboxUnavailable` if none."""
    if config.backend not in ("auto", *BACKENDS):
        raise SandboxUnavailable(
            f"unknown sandbox backend {config.backend!r}; expected auto, {', '.join(BACKENDS)}"
        )
    # Probed in order of preference, only as far as needed: the namespaces probe starts a
    # process of its own, which a machine with bubblewrap never needs.
    if config.backend != "auto":
        if not backend_works(config.backend, config):
            raise SandboxUnavailable(f"the {config.backend!r} sandbox does not work on this machine")
        return config.backend
    if backend_works("bwrap", config):
        return "bwrap"
    if not config.allow_weaker_isolation:
        raise SandboxUnavailable(
            "python graders run only inside bubblewrap, which is not installed or does not work "
            "here (apt-get install bubblewrap); allow_weaker_isolation runs them with "
            "namespaces/resource limits only"
        )
    for name in ("namespaces", "process"):
        if backend_works(name, config):
            return name
    raise SandboxUnavailable("no sandbox backend works on this machine")


# --- one child process ---------------------------------------------------------------------


def _run_child(
    backend: str, source: str, cases: list[tuple[dict, dict]], config: SandboxConfig
) -> tuple[list[CaseOutcome], CaseOutcome | None]:
    """Run ``cases`` in one child until they are done or it fails. Returns the outcomes of a
    prefix of ``cases`` (at least one case unless the source cannot load) and, when the source
    itself cannot run, the outcome to give every remaining case."""
    limits = {
        "memory_bytes": config.memory_mb * 1024 * 1024,
        "open_files": config.open_files,
        "cpu_seconds": math.ceil(config.startup_timeout_s + config.timeout_s * len(cases)) + 1,
    }
    payload = json.dumps(
        {
            "source": source,
            "limits": limits,
            "unshare": backend == "namespaces",
            "cases": [{"sample": s, "item": i} for s, i in cases],
        },
        ensure_ascii=False,
        default=str,
    ).encode("utf-8")
    with tempfile.TemporaryDirectory(prefix="tunesmith-grader-") as workdir:
        proc = subprocess.Popen(
            _argv(backend, config),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=dict(_CHILD_ENV),
            start_new_session=True,
            close_fds=True,
        )
        try:
            return _converse(proc, payload, len(cases), config)
        finally:
            _kill(proc)


def _converse(
    proc: subprocess.Popen, payload: bytes, n: int, config: SandboxConfig
) -> tuple[list[CaseOutcome], CaseOutcome | None]:
    writer = threading.Thread(target=_feed, args=(proc.stdin, payload), daemon=True)
    writer.start()
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "out")
    sel.register(proc.stderr, selectors.EVENT_READ, "err")
    outcomes: list[CaseOutcome] = []
    buffer, stderr_tail, ready = b"", b"", False
    last = time.monotonic()
    deadline = last + config.startup_timeout_s
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if not ready:
                    return outcomes, CaseOutcome(
                        None,
                        f"the grader's source did not finish loading within {config.startup_timeout_s:g} s",
                        "timeout",
                        config.startup_timeout_s,
                    )
                return outcomes + [
                    CaseOutcome(
                        None,
                        f"grade() did not return within {config.timeout_s:g} s",
                        "timeout",
                        time.monotonic() - last,
                    )
                ], None
            events = sel.select(timeout=remaining)
            for key, _ in events:
                chunk = os.read(key.fileobj.fileno(), 65536)
                if key.data == "err":
                    if not chunk:
                        sel.unregister(key.fileobj)
                    stderr_tail = (stderr_tail + chunk)[-_STDERR_TAIL:]
                    continue
                if not chunk:  # stdout closed: the child exited (or closed it; then kill it)
                    try:
                        status = proc.wait(timeout=1.0)
                    except subprocess.TimeoutExpired:
                        _kill(proc)
                        status = proc.returncode
                    if len(outcomes) >= n:
                        return outcomes, None
                    why = _exit_text(status, stderr_tail)
                    if not ready:
                        return outcomes, CaseOutcome(None, why, "server")
                    return outcomes + [CaseOutcome(None, why, "server", time.monotonic() - last)], None
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    now = time.monotonic()
                    message = _parse_line(line, len(outcomes), ready)
                    if message.get("load_error") is not None:
                        kind = "server" if message["load_error"].startswith("sandbox: ") else "runtime"
                        return outcomes, CaseOutcome(None, message["load_error"], kind, now - last)
                    if message.get("ready"):
                        ready = True
                    elif "protocol" in message:
                        return outcomes + [CaseOutcome(None, message["protocol"], "server", now - last)], None
                    elif "score" in message:
                        outcomes.append(CaseOutcome(message["score"], seconds=now - last))
                    else:
                        outcomes.append(CaseOutcome(None, message["error"], "runtime", now - last))
                    if len(outcomes) >= n:
                        return outcomes, None
                    last, deadline = now, now + config.timeout_s
                if len(buffer) > config.max_line_bytes:
                    error = f"the grader wrote more than {config.max_line_bytes} bytes of output"
                    if not ready:
                        return outcomes, CaseOutcome(None, error, "server")
                    return outcomes + [CaseOutcome(None, error, "server")], None
    finally:
        sel.close()


def _parse_line(line: bytes, expected: int, ready: bool) -> dict[str, Any]:
    """Validate one protocol line from the (untrusted) child."""
    try:
        message = jsontext.loads(line, max_depth=2, allow_nan=False)
    except (ValueError, UnicodeDecodeError):
        return {"protocol": "the grader process wrote output that is not the result protocol"}
    if not isinstance(message, dict):
        return {"protocol": "the grader process wrote an invalid result line"}
    if not ready:
        if message == {"ready": True}:
            return message
        if set(message) == {"load_error"} and isinstance(message["load_error"], str):
            return message
        return {"protocol": "the grader process wrote an invalid start-up line"}
    if message.get("i") != expected or isinstance(message.get("i"), bool):
        return {"protocol": "the grader process answered out of order"}
    if set(message) == {"i", "score"}:
        score = message["score"]
        if isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score):
            return {"score": float(score)}
    if set(message) == {"i", "error"} and isinstance(message["error"], str):
        return {"error": message["error"][:8000]}
    return {"protocol": "the grader process wrote an invalid result line"}


def _feed(stream, payload: bytes) -> None:
    try:
        stream.write(payload)
        stream.close()
    except (BrokenPipeError, OSError, ValueError):
        pass


def _kill(proc: subprocess.Popen) -> None:
    # The whole process group: the child and anything it started (start_new_session=True).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        if proc.poll() is None:
            proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            stream.close()
        except (OSError, ValueError):
            pass


def _exit_text(status: int, stderr_tail: bytes) -> str:
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        why = f"the grader process was killed by {name}"
        if -status == signal.SIGXCPU:
            why += " (CPU time limit)"
    else:
        why = f"the grader process exited with status {status} before answering"
    tail = stderr_tail.decode("utf-8", "replace").strip()
    return why + (f"; stderr ends: {tail[-1000:]}" if tail else "")


# --- command lines and probes -----------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _child_source() -> str:
    return CHILD_SOURCE_PATH.read_text(encoding="utf-8")


def _python_argv() -> list[str]:
    return [sys.executable, "-I", "-c", _child_source()]


def _argv(backend: str, config: SandboxConfig) -> list[str]:
    if backend == "bwrap":
        return [*_bwrap_args(_bwrap_binary(config)), "--", *_python_argv()]
    return _python_argv()


def _bwrap_binary(config: SandboxConfig) -> str | None:
    return config.bwrap_path or shutil.which("bwrap")


def _bwrap_args(binary: str) -> list[str]:
    """bubblewrap's command line up to ``--``: a root with only the system and Python files."""
    args = [
        binary,
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--cap-drop",
        "ALL",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--chdir",
        "/tmp",
    ]
    if _bwrap_has("--disable-userns", binary):
        args[1:1] = ["--unshare-user", "--disable-userns"]
    for name, value in _CHILD_ENV.items():
        args += ["--setenv", name, value]
    args += ["--setenv", "HOME", "/tmp", "--setenv", "PATH", "/usr/bin:/bin"]
    mounted: list[str] = []
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
            mounted.append(top)
    for path in _python_dirs():
        if not any(path == m or path.startswith(m + "/") for m in mounted):
            args += ["--ro-bind", path, path]
            mounted.append(path)
    return args


def _python_dirs() -> list[str]:
    """The directories the interpreter needs: its installation and the virtualenv, if any."""
    dirs = []
    for path in (
        sys.base_prefix,
        sys.base_exec_prefix,
        sys.prefix,
        sys.exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
    ):
        path = os.path.realpath(path)
        if os.path.isdir(path) and path not in dirs:
            dirs.append(path)
    # Shortest first, dropping any directory inside one already listed.
    dirs.sort(key=len)
    kept: list[str] = []
    for path in dirs:
        if not any(path.startswith(k + "/") for k in kept):
            kept.append(path)
    # The venv's bin/python is a symlink into the base installation, reached by its venv path.
    venv_bin = os.path.dirname(sys.executable)
    if os.path.isdir(venv_bin) and not any(venv_bin == k or venv_bin.startswith(k + "/") for k in kept):
        kept.append(venv_bin)
    return kept


@functools.cache
def _bwrap_has(option: str, binary: str) -> bool:
    try:
        out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return option in out.stdout + out.stderr


@functools.cache
def _bwrap_works(binary: str | None) -> bool:
    if binary is None:
        return False
    try:
        out = subprocess.run(
            [*_bwrap_args(binary), "--", sys.executable, "-I", "-c", "print('ok')"],
            capture_output=True,
            text=True,
            timeout=30,
            env=dict(_CHILD_ENV),
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and out.stdout.strip() == "ok"


@functools.cache
def _namespaces_work() -> bool:
    """The child's own namespace set-up, tried once with a trivial grader."""
    if not sys.platform.startswith("linux"):
        return False
    payload = json.dumps(
        {
            "source": "def grade(sample, item):\n    return 1.0\n",
            "limits": {"memory_bytes": 1 << 30, "open_files": 64, "cpu_seconds": 30},
            "unshare": True,
            "cases": [{"sample": {}, "item": {}}],
        }
    )
    try:
        out = subprocess.run(
            _python_argv(),
            input=payload,
            capture_output=True,
            text=True,
            timeout=30,
            env=dict(_CHILD_ENV),
            cwd=tempfile.gettempdir(),
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return out.stdout.split() == ['{"ready":', "true}", '{"i":', "0,", '"score":', "1.0}"]


@functools.cache
def _process_works() -> bool:
    return os.name == "posix"
