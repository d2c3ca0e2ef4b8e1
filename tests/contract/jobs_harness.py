"""A real ``tunesmith server`` on loopback for the jobs tests: uvicorn in a thread on a free
port, workers in threads (or, with :meth:`Service.worker_argv`, processes), API keys for two
projects, and the official SDK.

A test module gets its module-scoped server and SDK client with one line::

    svc, client = service_fixtures("dpo", workers=1, train_overrides=["train.max_length=64"])
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import factory
import pytest


def service_fixtures(name: str, *, workers: int = 0, **settings):
    """Module-scoped ``svc`` (a :class:`Service` over the tiny Llama, allow-listed as ``tiny``,
    with ``workers`` worker threads) and ``client`` (the SDK with project alpha's key) fixtures;
    assign them to module globals of those names."""

    @pytest.fixture(scope="module", name="svc")
    def svc_fixture(tmp_path_factory, tiny_model_dir):
        s = Service(tmp_path_factory.mktemp(name), {"tiny": tiny_model_dir}, **settings)
        for _ in range(workers):
            s.start_worker()
        yield s
        s.close()

    @pytest.fixture(scope="module", name="client")
    def client_fixture(svc):
        return svc.client()

    return svc_fixture, client_fixture


def upload(client, rows: list, name: str = "train.jsonl", purpose: str = "fine-tune"):
    """Upload ``rows`` as a JSONL file through the SDK."""
    return client.files.create(file=(name, jsonl_bytes(rows), "application/jsonl"), purpose=purpose)


def chat_rows(n: int, seed: int = 0) -> list[dict]:
    return factory.color_chats(n, seed=seed)


def jsonl_bytes(rows: list) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")


class Service:
    """Server + store for one test module. ``requests`` counts HTTP requests per (method, path)."""

    def __init__(self, root: Path, base_models: dict, **settings):
        import uvicorn

        from tunesmith.jobs.app import create_app
        from tunesmith.jobs.settings import Settings
        from tunesmith.jobs.store import Store

        self.root = root
        db = settings.pop("db", None) or f"sqlite:///{root / 'jobs.db'}"
        self.settings = Settings(db=db, data_dir=root / "data", base_models=base_models, **settings)
        self.store = Store(self.settings.db)
        app = create_app(self.settings, self.store)
        self.inference = app.state.inference  # the per-base InferenceServers (tunesmith.serve)
        self.tinker = app.state.service.tinker  # the Tinker API's TinkerHost, or None
        self.requests: list[tuple[str, str]] = []
        inner = app

        async def counting(scope, receive, send):
            if scope["type"] == "http":
                self.requests.append((scope["method"], scope["path"]))
            await inner(scope, receive, send)

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.server = uvicorn.Server(uvicorn.Config(counting, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        self.key_a, _ = self.store.create_key("alpha")
        self.key_b, _ = self.store.create_key("beta")
        self.workers: list = []

    def client(self, key: str | None = None, **kw):
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key=key or self.key_a, **kw)

    def start_worker(self, **overrides):
        from tunesmith.jobs.worker import Worker

        settings = self.settings
        if overrides:
            from dataclasses import replace

            settings = replace(settings, **overrides)
        worker = Worker(settings, self.store)
        t = threading.Thread(target=worker.run, daemon=True)
        t.start()
        self.workers.append((worker, t))
        return worker

    def worker_argv(self, *extra: str) -> list[str]:
        """The ``tunesmith worker …`` arguments (after ``tunesmith``) for this service."""
        argv = [
            "worker",
            "--data",
            str(self.settings.data_dir),
            "--db",
            self.settings.db,
            "--poll",
            str(self.settings.poll_interval),
            "--stale-after",
            str(self.settings.stale_after),
        ]
        for name, path in self.settings.base_models.items():
            argv += ["--base-model", f"{name}={path}"]
        for item in self.settings.train_overrides:
            argv += ["--set", item]
        return [*argv, *extra]

    def stop_workers(self) -> None:
        for worker, _ in self.workers:
            worker.stop_event.set()
        for _, t in self.workers:
            t.join(timeout=30)
        self.workers.clear()

    def close(self) -> None:
        self.stop_workers()
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.store.dispose()


def wait_for(fn, timeout: float = 120.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_status(client, job_id: str, statuses: tuple[str, ...], timeout: float = 180.0):
    return wait_for(
        lambda: (j := client.fine_tuning.jobs.retrieve(job_id)).status in statuses and j,
        timeout=timeout,
        interval=0.2,
        what=f"job {job_id} to reach {statuses}",
    )
