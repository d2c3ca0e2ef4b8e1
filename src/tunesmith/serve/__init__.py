"""OpenAI-compatible inference: one base model, LoRA adapters by id, continuous batching.

Public API (imports are lazy so ``import tunesmith.serve`` does not load torch or FastAPI):

* :class:`~tunesmith.serve.server.InferenceServer` -- the model registry + generation thread;
  ``add_adapter(id, path)``, ``remove_adapter(id)``, ``models()``, ``get(id)``, ``close()``.
* :func:`~tunesmith.serve.app.create_app` / :func:`~tunesmith.serve.app.build_router` -- the
  FastAPI app or a router to include in another app;
* :mod:`tunesmith.serve.handlers` -- the endpoints as plain functions (``chat_completions``,
  ``completions``, ``list_models`` …) and ``answer``, which runs one with the error contract.
* :func:`~tunesmith.serve.run.serve` -- run it with uvicorn (what ``tunesmith serve`` calls).
"""

from __future__ import annotations

__all__ = ["InferenceServer", "create_app", "build_router", "serve"]


def __getattr__(name: str):
    if name == "InferenceServer":
        from .server import InferenceServer

        return InferenceServer
    if name in ("create_app", "build_router"):
        from . import app

        return getattr(app, name)
    if name == "serve":
        from .run import serve

        return serve
    raise AttributeError(name)
