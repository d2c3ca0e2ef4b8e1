"""The python grader's child process: the only code that runs a user's ``grade`` function.

This file is not imported by tunesmith; :mod:`tunesmith.graders.sandbox` passes its text to
``python -I -c`` (inside bubblewrap when available), so it depends on the standard library only.

Protocol. stdin carries one JSON object ``{"source", "cases": [{"sample", "item"}, …],
"limits": {...}, "unshare": bool}``. The child

1. when ``unshare`` is set (the ``namespaces`` backend), calls ``unshare(2)`` for new user,
   mount, network, IPC, UTS and PID namespaces, makes every mount read-only and forks, so the
   grader has no network, cannot change any file, and cannot signal processes outside its own
   PID namespace (it can still *read* what the server's user can);
2. applies the resource limits (address space, CPU seconds, file size 0, open files, no core
   dumps) to itself, so they bind everything the grader does;
3. keeps a private copy of stdout for results and points fd 1 and ``sys.stdout`` at stderr, so
   the grader's ``print`` cannot interleave with the protocol;
4. executes the source, then writes one JSON line per case, in order:
   ``{"ready": true}`` after the module ran (or ``{"load_error": "…"}`` and exits), then
   ``{"i": n, "score": x}`` or ``{"i": n, "error": "…"}`` per case, flushed one by one so the
   parent can time each case.

The parent trusts none of this output: the grader runs in this same interpreter and could
rewrite anything here, so every line is re-validated on the other side.
"""

import json
import math
import os
import resource
import signal
import sys
import traceback


def _unshare_namespaces():
    import ctypes

    clone_newns, clone_newuts, clone_newipc = 0x00020000, 0x04000000, 0x08000000
    clone_newuser, clone_newpid, clone_newnet = 0x10000000, 0x20000000, 0x40000000
    libc = ctypes.CDLL(None, use_errno=True)
    flags = clone_newuser | clone_newns | clone_newnet | clone_newipc | clone_newuts | clone_newpid
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "unshare: " + os.strerror(err))
    _make_mounts_read_only(libc)
    pid = os.fork()  # the child is PID 1 of the new PID namespace
    if pid == 0:
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the parent
        return
    _, status = os.waitpid(pid, 0)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def _make_mounts_read_only(libc):
    """Every mount in this (new, private) mount namespace read-only, recursively, with
    mount_setattr(2) (Linux 5.12+; syscall 442 on every architecture). The server's own mounts
    are untouched: these are this namespace's copies. Fails closed."""
    import ctypes

    class MountAttr(ctypes.Structure):
        _fields_ = [
            ("attr_set", ctypes.c_uint64),
            ("attr_clr", ctypes.c_uint64),
            ("propagation", ctypes.c_uint64),
            ("userns_fd", ctypes.c_uint64),
        ]

    ms_rec, ms_private = 0x4000, 0x40000
    if libc.mount(None, b"/", None, ms_rec | ms_private, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "making mounts private: " + os.strerror(err))
    attr = MountAttr(attr_set=0x1)  # MOUNT_ATTR_RDONLY
    libc.syscall.restype = ctypes.c_long
    at_fdcwd, at_recursive = -100, 0x8000
    if libc.syscall(442, at_fdcwd, b"/", at_recursive, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "making the file system read-only: " + os.strerror(err))


def _apply_limits(limits):
    def cap(which, value):
        soft, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))

    cap(resource.RLIMIT_AS, int(limits["memory_bytes"]))
    cap(resource.RLIMIT_CPU, int(limits["cpu_seconds"]))
    cap(resource.RLIMIT_FSIZE, 0)
    cap(resource.RLIMIT_NOFILE, int(limits["open_files"]))
    cap(resource.RLIMIT_CORE, 0)
    # A write past RLIMIT_FSIZE raises SIGXFSZ, whose default action kills the process;
    # ignored, the write fails with EFBIG and the grader sees an OSError.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _short(exc):
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text[-2000:]


def _grader_traceback(exc):
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<grader>"]
    where = "".join(traceback.format_list(frames[-3:]))
    return (where + _short(exc))[-4000:]


def _result(i, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return {"i": i, "error": f"grade() returned {type(value).__name__}, expected a float"}
    try:
        score = float(value)
    except OverflowError:
        score = math.inf
    if not math.isfinite(score):
        return {"i": i, "error": f"grade() returned {score}, expected a finite float"}
    return {"i": i, "score": score}


def main():
    payload = json.loads(sys.stdin.buffer.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if payload.get("unshare"):
        try:
            _unshare_namespaces()
        except OSError as exc:
            sys.stdout.write(json.dumps({"load_error": f"sandbox: {exc}"}) + "\n")
            sys.stdout.flush()
            return
    _apply_limits(payload["limits"])
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    namespace = {"__name__": "grader", "__builtins__": __builtins__}
    try:
        exec(compile(payload["source"], "<grader>", "exec"), namespace)
        grade = namespace.get("grade")
        if not callable(grade):
            raise NameError("the source does not define a function grade(sample, item)")
    except BaseException as exc:  # noqa: BLE001 - anything the grader does is reported
        send({"load_error": _grader_traceback(exc)})
        return
    send({"ready": True})
    for i, case in enumerate(payload["cases"]):
        try:
            value = grade(case["sample"], case["item"])
        except BaseException as exc:  # noqa: BLE001
            send({"i": i, "error": _grader_traceback(exc)})
            continue
        send(_result(i, value))


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)
