"""A real ``tunesmith server`` with the Tinker-compatible API, and the official ``tinker`` SDK.

A test module gets a module-scoped server (uvicorn on loopback, :class:`jobs_harness.Service`)
whose Tinker base models are the tiny Llama as ``tiny`` (and whatever else it names), plus a
factory of SDK clients::

    svc, tinker_client = tinker_fixtures("tinker_api")

    def test_x(tinker_client):
        sc = tinker_client()              # ServiceClient with project alpha's key
        other = tinker_client("beta")     # … with project beta's key
"""

from __future__ import annotations

import os

import pytest
from jobs_harness import Service

pytest.importorskip("tinker")
os.environ.setdefault("TINKER_TELEMETRY", "0")


def tinker_fixtures(name: str, **settings):
    """Module-scoped ``svc`` (:class:`jobs_harness.Service` with the tiny Llama as Tinker base
    model ``tiny``) and ``tinker_client`` (``project -> tinker.ServiceClient``) fixtures."""

    @pytest.fixture(scope="module", name="svc")
    def svc_fixture(tmp_path_factory, tiny_model_dir):
        s = Service(tmp_path_factory.mktemp(name), {"tiny": tiny_model_dir}, **settings)
        yield s
        s.close()

    @pytest.fixture(scope="module", name="tinker_client")
    def client_fixture(svc):
        clients = []

        def make(project: str = "alpha"):
            import tinker

            key = svc.key_a if project == "alpha" else svc.key_b
            sc = tinker.ServiceClient(base_url=tinker_url(svc), api_key="tml-" + key)
            clients.append(sc)
            return sc

        yield make
        for sc in clients:  # finishes the session on the server (its models are unloaded)
            sc.close("success").result(timeout=30)

    return svc_fixture, client_fixture


def tinker_url(svc: Service) -> str:
    """The server's root URL (the SDK appends ``/api/v1/…`` itself)."""
    return f"http://127.0.0.1:{svc.port}"
