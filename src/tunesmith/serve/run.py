"""Run an :class:`InferenceServer` behind uvicorn (blocking), or in a background thread (tests)."""

from __future__ import annotations

import socket
import threading
import time


def serve(
    server,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    adapter_root: str | None = None,
    log_level: str = "info",
) -> None:
    """Serve until interrupted; stops the generation thread on exit."""
    import uvicorn

    from .app import create_app

    app = create_app(server, api_key=api_key, adapter_root=adapter_root, close_on_shutdown=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


class BackgroundServer:
    """uvicorn on a free loopback port in a daemon thread: ``with BackgroundServer(server) as url:``.

    ``url`` is the API base (``http://127.0.0.1:PORT/v1``); leaving the block stops uvicorn
    (the InferenceServer itself stays up; close it yourself).
    """

    def __init__(self, server, *, api_key: str | None = None, adapter_root: str | None = None):
        import uvicorn

        from .app import create_app

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        app = create_app(server, api_key=api_key, adapter_root=adapter_root)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.uvicorn = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.uvicorn.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}/v1"

    def __exit__(self, *exc) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(timeout=10)
