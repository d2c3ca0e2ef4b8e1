"""Database URLs for the store tests: SQLite always, plus a throwaway PostgreSQL cluster
(initdb + pg_ctl in a temp folder, loopback only) when Debian's postgresql binaries exist."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _pg_bin() -> str | None:
    for name in ("initdb", "pg_ctl"):
        if shutil.which(name) is None:
            found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
            if not found:
                return None
    direct = shutil.which("initdb")
    return (
        os.path.dirname(os.path.realpath(direct))
        if direct
        else os.path.dirname(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1])
    )


def _as_owner(cmd: list[str], owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--", *cmd] if owner else cmd


@pytest.fixture(scope="session")
def postgres_url():
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed: apt-get install postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'tunesmith[service]')")
    # Not under pytest's base temp: that folder is private to this user, and the cluster may
    # have to run as another one.
    root = Path(tempfile.mkdtemp(prefix="tunesmith-pg-"))
    owner = None
    if os.geteuid() == 0:  # initdb refuses to run as root: run the cluster as the postgres user
        owner = "postgres"
        try:
            import pwd

            pwd.getpwnam(owner)
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to own a test cluster")
        shutil.chown(root, owner)
    data = root / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    made = subprocess.run(
        _as_owner(
            [
                f"{bindir}/initdb",
                "-D",
                str(data),
                "-U",
                "tunesmith",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            owner,
        ),
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        raise RuntimeError(f"initdb failed: {made.stderr or made.stdout}")
    opts = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} -c fsync=off"
    subprocess.run(
        _as_owner(
            [
                f"{bindir}/pg_ctl",
                "-D",
                str(data),
                "-o",
                opts,
                "-l",
                str(root / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            owner,
        ),
        check=True,
        capture_output=True,
    )
    url = f"postgresql://tunesmith@127.0.0.1:{port}/postgres"
    try:
        yield url
    finally:
        subprocess.run(
            _as_owner([f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"], owner),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    from tunesmith.jobs.store import Store
    from tunesmith.jobs.tables import metadata

    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
        yield s
        s.dispose()
        return
    url = request.getfixturevalue("postgres_url")
    s = Store(url)
    with s.engine.begin() as c:  # each test starts from empty tables
        for table in reversed(metadata.sorted_tables):
            c.execute(table.delete())
    yield s
    s.dispose()
