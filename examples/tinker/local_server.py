"""Shared by the tinker-cookbook examples: the command-line options they have in common, and a
``tunesmith server`` with the Tinker API started as a child process when no ``--base-url`` is
given (its data folder is a temporary one, removed afterwards).

Run from the repository root (``python examples/tinker/sl_cookbook.py``); the examples import
this file as a sibling module.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
MODEL_PATH = "models/SmolLM2-135M-Instruct.Q4_1.gguf"


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--base-url",
        default=os.environ.get("TINKER_BASE_URL"),
        help="a running tunesmith server (default: $TINKER_BASE_URL; neither: start one here)",
    )
    p.add_argument(
        "--api-key", default=os.environ.get("TINKER_API_KEY"), help="tml-<key> (default: $TINKER_API_KEY)"
    )
    p.add_argument("--model", default=MODEL_NAME, help="the base model's name on the server")
    p.add_argument(
        "--model-path",
        default=MODEL_PATH,
        help="the same model on this machine (folder or .gguf): the cookbook's tokenizer comes from it",
    )
    p.add_argument(
        "--log-path", default=None, help="the cookbook's run folder (default: a new temporary one)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads of the server started here")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def tinker_server(args) -> Iterator[None]:
    """Point the SDK (``TINKER_BASE_URL`` / ``TINKER_API_KEY``) at ``args.base_url``, or at a
    ``tunesmith server --tinker-model MODEL=MODEL_PATH`` started for the duration."""
    os.environ.setdefault("TINKER_TELEMETRY", "0")
    if args.base_url:
        if not args.api_key:
            sys.exit("--base-url needs --api-key or $TINKER_API_KEY (tml-<key>)")
        os.environ["TINKER_BASE_URL"], os.environ["TINKER_API_KEY"] = args.base_url, args.api_key
        yield
        return
    tunesmith = [sys.executable, "-m", "tunesmith"]
    with tempfile.TemporaryDirectory(prefix="tunesmith-tinker-") as data:
        key = subprocess.run(
            [*tunesmith, "server", "--data", data, "keys", "create", "--project", "cookbook"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[0]
        port = _free_port()
        argv = [*tunesmith, "server", "--data", data, "--port", str(port)]
        argv += ["--tinker-model", f"{args.model}={args.model_path}", "--log-level", "warning"]
        if args.threads:
            argv += ["--threads", str(args.threads)]
        server = subprocess.Popen(argv)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.time() + 120
            while True:
                try:
                    urllib.request.urlopen(url + "/api/v1/healthz", timeout=2).read()
                    break
                except OSError:
                    if server.poll() is not None or time.time() > deadline:
                        sys.exit(f"tunesmith server did not start: {' '.join(argv)}")
                    time.sleep(0.5)
            print(f"started {' '.join(argv)}", flush=True)
            os.environ["TINKER_BASE_URL"], os.environ["TINKER_API_KEY"] = url, "tml-" + key
            yield
        finally:
            server.terminate()
            server.wait(timeout=30)


def log_path(args, name: str) -> str:
    """``args.log_path``, else a new temporary folder (the cookbook resumes from a folder that
    already holds checkpoints, so a fresh run needs a fresh one)."""
    if args.log_path:
        return str(Path(args.log_path))
    return tempfile.mkdtemp(prefix=f"{name}-")
