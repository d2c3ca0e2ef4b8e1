"""The jobs database: SQLAlchemy Core over SQLite (default, one file) or PostgreSQL (by URL).

Every public method is one short transaction. Objects are returned as plain dicts of their
columns (JSON columns decoded). Project scoping is the caller's job *and* the store's: every
lookup of a project-owned object takes ``project_id`` and returns None for another project's
object, so "not yours" and "does not exist" cannot be told apart.

The tables are in :mod:`.tables`. Ordering and cursors: each table has an integer ``seq``
(insertion order); lists are newest first by ``seq`` (files may ask for ``asc``) and a cursor is
an object id, exclusive.

Claiming (:meth:`Store.claim_job`) is a single ``UPDATE … WHERE seq = (SELECT … LIMIT 1)
RETURNING``. On PostgreSQL the inner select carries ``FOR UPDATE SKIP LOCKED`` so concurrent
workers never wait on or take the same row; SQLite serialises writers, which makes the single
statement atomic there too.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from . import ids
from .tables import api_keys, checkpoints, events, files, jobs, metadata, permissions, projects

TERMINAL = ("succeeded", "failed", "cancelled")


def now() -> int:
    return int(time.time())


class CursorNotFound(LookupError):
    """The ``after`` cursor names no object in this listing."""


def _first(c, stmt) -> dict | None:
    """The first row ``stmt`` selects on connection ``c``, as a dict; None when there is none."""
    row = c.execute(stmt).mappings().first()
    return dict(row) if row else None


def _all(c, stmt) -> list[dict]:
    """Every row ``stmt`` selects on connection ``c``, as dicts."""
    return [dict(r) for r in c.execute(stmt).mappings()]


def _url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use the psycopg 3 driver for them."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Store:
    """All database access of the service. ``url``: an SQLAlchemy URL or a plain path to an
    SQLite file."""

    def __init__(self, url: str):
        if "://" not in url:
            url = f"sqlite:///{url}"
        self.url = _url(url)
        self.is_postgres = self.url.startswith("postgresql")
        kwargs: dict[str, Any] = {"future": True}
        if self.url.startswith("sqlite"):
            # Several processes (server, workers) share the file: wait for the write lock
            # instead of failing, and let FastAPI's threads use one connection pool.
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine = sa.create_engine(self.url, **kwargs)
        if self.url.startswith("sqlite"):

            @sa.event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn, _record):  # WAL: readers never block the writer
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

        metadata.create_all(self.engine)
        self._add_missing_columns()
        self.clock = time.time
        """Seconds since the epoch, for file expiry; tests replace it to move time forward."""

    def _add_missing_columns(self) -> None:
        """A database made by an earlier version lacks the columns added since (all nullable):
        add them, so upgrading the server needs no migration step."""
        inspector = sa.inspect(self.engine)
        with self.engine.begin() as c:
            for table in metadata.sorted_tables:
                have = {col["name"] for col in inspector.get_columns(table.name)}
                for col in table.columns:
                    if col.name not in have and col.nullable:
                        kind = col.type.compile(dialect=self.engine.dialect)
                        c.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{col.name}" {kind}'))

    def now(self) -> int:
        return int(self.clock())

    def dispose(self) -> None:
        self.engine.dispose()

    def _one(self, stmt) -> dict | None:
        """:func:`_first` of ``stmt`` in a connection of its own."""
        with self.engine.connect() as c:
            return _first(c, stmt)

    def _many(self, stmt) -> list[dict]:
        """:func:`_all` of ``stmt`` in a connection of its own."""
        with self.engine.connect() as c:
            return _all(c, stmt)

    # -- projects and keys ------------------------------------------------------------------
    def ensure_project(self, name: str) -> dict:
        named = sa.select(projects).where(projects.c.name == name)
        with self.engine.begin() as c:
            row = _first(c, named)
            if row is None:
                c.execute(projects.insert().values(id=ids.project_id(), name=name, created_at=now()))
                row = _first(c, named)
            return row

    def create_key(self, project_name: str, *, admin: bool = False) -> tuple[str, dict]:
        """A new API key for ``project_name`` (created if needed): (the key, the project).
        An ``admin`` key also manages the project's checkpoint permissions (P1-P3)."""
        project = self.ensure_project(project_name)
        key = ids.new_api_key()
        with self.engine.begin() as c:
            c.execute(
                api_keys.insert().values(
                    key_hash=ids.hash_key(key),
                    hint=key[:9] + "…" + key[-4:],
                    project_id=project["id"],
                    created_at=now(),
                    is_admin=admin,
                )
            )
        return key, project

    def project_exists(self, project_id: str) -> bool:
        with self.engine.connect() as c:
            return c.execute(sa.select(projects.c.seq).where(projects.c.id == project_id)).first() is not None

    def list_keys(self) -> list[dict]:
        q = (
            sa.select(
                api_keys.c.hint,
                api_keys.c.created_at,
                api_keys.c.revoked_at,
                api_keys.c.is_admin,
                projects.c.name,
                projects.c.id.label("project_id"),
            )
            .join(projects, projects.c.id == api_keys.c.project_id)
            .order_by(api_keys.c.seq)
        )
        return self._many(q)

    def revoke_key(self, key: str) -> bool:
        with self.engine.begin() as c:
            res = c.execute(
                api_keys.update()
                .where(api_keys.c.key_hash == ids.hash_key(key), api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now())
            )
            return res.rowcount > 0

    def project_for_key(self, key: str) -> dict | None:
        """The project an unrevoked key belongs to (``admin``: whether it is an admin key), or None."""
        h = ids.hash_key(key)
        q = (
            sa.select(api_keys.c.key_hash, api_keys.c.revoked_at, api_keys.c.is_admin, projects)
            .join(projects, projects.c.id == api_keys.c.project_id)
            .where(api_keys.c.key_hash == h)
        )
        row = self._one(q)
        if row is None or row["revoked_at"] is not None or not ids.keys_match(h, row["key_hash"]):
            return None
        return {"id": row["id"], "name": row["name"], "admin": bool(row["is_admin"])}

    # -- generic helpers ----------------------------------------------------------------------
    def _page(
        self, c, table: sa.Table, where: list, after: str | None, limit: int, ascending: bool = False
    ) -> tuple[list[dict], bool]:
        """Rows of ``table`` matching ``where``, ordered by seq, after the cursor id, plus has_more."""
        if after is not None:
            seq = c.execute(sa.select(table.c.seq).where(table.c.id == after, *where)).scalar()
            if seq is None:
                raise CursorNotFound(after)
            where = [*where, table.c.seq > seq if ascending else table.c.seq < seq]
        order = table.c.seq.asc() if ascending else table.c.seq.desc()
        rows = _all(c, sa.select(table).where(*where).order_by(order).limit(limit + 1))
        return rows[:limit], len(rows) > limit

    # -- files ----------------------------------------------------------------------------------
    def add_file(self, row: dict) -> dict:
        with self.engine.begin() as c:
            c.execute(files.insert().values(**row))
        return self.get_file(row["project_id"], row["id"])

    def _unexpired(self):
        """Files whose ``expires_at`` has not passed (an expired file is gone for every caller,
        before the sweep deletes its row and blob)."""
        return sa.or_(files.c.expires_at.is_(None), files.c.expires_at > self.now())

    def get_file(self, project_id: str, file_id: str) -> dict | None:
        return self._one(
            sa.select(files).where(files.c.id == file_id, files.c.project_id == project_id, self._unexpired())
        )

    def list_files(self, project_id: str, *, after=None, limit=10000, ascending=False, purpose=None):
        where = [files.c.project_id == project_id, self._unexpired()]
        if purpose:
            where.append(files.c.purpose == purpose)
        with self.engine.connect() as c:
            return self._page(c, files, where, after, limit, ascending)

    def delete_file(self, project_id: str, file_id: str) -> bool:
        with self.engine.begin() as c:
            res = c.execute(files.delete().where(files.c.id == file_id, files.c.project_id == project_id))
            return res.rowcount > 0

    def sweep_expired_files(self) -> list[str]:
        """Delete the rows of every expired file; their ids (the caller deletes the blobs after
        the rows, so no reader finds a row without its blob)."""
        with self.engine.begin() as c:
            gone = (
                c.execute(files.delete().where(files.c.expires_at <= self.now()).returning(files.c.id))
                .scalars()
                .all()
            )
        return list(gone)

    # -- jobs -------------------------------------------------------------------------------------
    def add_job(self, row: dict) -> dict:
        with self.engine.begin() as c:
            c.execute(jobs.insert().values(**row))
        return self.get_job(row["project_id"], row["id"])

    def get_job(self, project_id: str | None, job_id: str) -> dict | None:
        """A job by id; ``project_id=None`` only for workers (which serve every project)."""
        where = [jobs.c.id == job_id]
        if project_id is not None:
            where.append(jobs.c.project_id == project_id)
        return self._one(sa.select(jobs).where(*where))

    def list_jobs(self, project_id: str, *, after=None, limit=20, metadata_filter: dict | None = None):
        with self.engine.connect() as c:
            if not metadata_filter:
                return self._page(c, jobs, [jobs.c.project_id == project_id], after, limit)
            # Metadata is a JSON column (portable between SQLite and PostgreSQL): filter in
            # Python over the project's jobs, then page the filtered list by cursor.
            rows = _all(c, sa.select(jobs).where(jobs.c.project_id == project_id).order_by(jobs.c.seq.desc()))
        rows = [r for r in rows if all((r["metadata"] or {}).get(k) == v for k, v in metadata_filter.items())]
        if after is not None:
            at = next((i for i, r in enumerate(rows) if r["id"] == after), None)
            if at is None:
                raise CursorNotFound(after)
            rows = rows[at + 1 :]
        return rows[:limit], len(rows) > limit

    def update_job(
        self,
        job_id: str,
        *,
        expect_status: tuple[str, ...] | None = None,
        worker_id: str | None = None,
        **values,
    ) -> dict | None:
        """Set ``values`` on a job, only if its status is in ``expect_status`` (when given) and
        it is held by ``worker_id`` (when given). Returns the updated job, or None if no row
        matched (the caller lost a race: the job was cancelled, paused or re-claimed)."""
        where = [jobs.c.id == job_id]
        if expect_status is not None:
            where.append(jobs.c.status.in_(expect_status))
        if worker_id is not None:
            where.append(jobs.c.worker_id == worker_id)
        with self.engine.begin() as c:
            res = c.execute(jobs.update().where(*where).values(**values))
            if res.rowcount == 0:
                return None
            return _first(c, sa.select(jobs).where(jobs.c.id == job_id))

    def claim_job(self, worker_id: str, stale_after: float) -> dict | None:
        """Atomically take the oldest job that needs a worker: validating or queued and not held
        by a live worker, or running under a worker whose heartbeat is older than
        ``stale_after`` seconds (it died: the job resumes from its last checkpoint)."""
        t = time.time()
        stale = sa.or_(jobs.c.worker_id.is_(None), jobs.c.heartbeat_at < t - stale_after)
        wanted = sa.or_(
            sa.and_(jobs.c.status.in_(("validating_files", "queued")), stale),
            sa.and_(jobs.c.status == "running", jobs.c.heartbeat_at < t - stale_after),
        )
        pick = sa.select(jobs.c.seq).where(wanted).order_by(jobs.c.seq).limit(1)
        if self.is_postgres:
            pick = pick.with_for_update(skip_locked=True)
        stmt = (
            jobs.update()
            .where(jobs.c.seq == pick.scalar_subquery())
            .values(worker_id=worker_id, heartbeat_at=t, attempts=jobs.c.attempts + 1)
            .returning(*jobs.c)
        )
        with self.engine.begin() as c:
            return _first(c, stmt)

    def heartbeat(self, job_id: str, worker_id: str) -> str | None:
        """Refresh the lease; returns the job's status, or None when this worker lost the job."""
        with self.engine.begin() as c:
            res = c.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.worker_id == worker_id)
                .values(heartbeat_at=time.time())
            )
            if res.rowcount == 0:
                return None
            return c.execute(sa.select(jobs.c.status).where(jobs.c.id == job_id)).scalar()

    def release_job(self, job_id: str, worker_id: str) -> None:
        """Drop this worker's lease (its training process is gone)."""
        with self.engine.begin() as c:
            c.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.worker_id == worker_id)
                .values(worker_id=None, heartbeat_at=None)
            )

    def requeue_stale(self, stale_after: float) -> list[str]:
        """Move running jobs whose worker stopped heartbeating back to ``queued``; their ids."""
        t = time.time()
        with self.engine.begin() as c:
            rows = (
                c.execute(
                    jobs.update()
                    .where(jobs.c.status == "running", jobs.c.heartbeat_at < t - stale_after)
                    .values(status="queued", worker_id=None, heartbeat_at=None)
                    .returning(jobs.c.id)
                )
                .scalars()
                .all()
            )
        for job_id in rows:
            self.add_event(
                job_id,
                "The worker running this job stopped responding; the job was "
                "queued again and will resume from its last checkpoint",
                level="warn",
            )
        return list(rows)

    # -- events ----------------------------------------------------------------------------------
    def add_event(
        self,
        job_id: str,
        message: str,
        *,
        level: str = "info",
        type: str = "message",
        data: dict | None = None,
    ) -> None:
        with self.engine.begin() as c:
            c.execute(
                events.insert().values(
                    id=ids.event_id(),
                    job_id=job_id,
                    created_at=now(),
                    level=level,
                    message=message,
                    type=type,
                    data=data,
                )
            )

    def add_metric_events(
        self, job_id: str, worker_id: str, rows: list[tuple[str, dict]], last_step: int
    ) -> bool:
        """Insert metrics events ``(message, data)`` and advance the job's ``last_step`` in ONE
        transaction, only while ``worker_id`` holds the job: a worker killed mid-publish leaves
        either all of them or none, so the worker that resumes the job neither skips nor repeats
        a step. Returns False (nothing written) when the worker lost the job."""
        with self.engine.begin() as c:
            res = c.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.worker_id == worker_id)
                .values(last_step=last_step)
            )
            if res.rowcount == 0:
                return False
            c.execute(
                events.insert(),
                [
                    dict(
                        id=ids.event_id(),
                        job_id=job_id,
                        created_at=now(),
                        level="info",
                        message=m,
                        type="metrics",
                        data=d,
                    )
                    for m, d in rows
                ],
            )
        return True

    def list_events(self, job_id: str, *, after=None, limit=20):
        with self.engine.connect() as c:
            return self._page(c, events, [events.c.job_id == job_id], after, limit)

    # -- checkpoints -------------------------------------------------------------------------------
    def add_checkpoint(self, row: dict) -> bool:
        """Insert a checkpoint unless this job already has one at that step (a resumed run
        writes the same step again)."""
        with self.engine.begin() as c:
            exists = c.execute(
                sa.select(checkpoints.c.seq).where(
                    checkpoints.c.job_id == row["job_id"], checkpoints.c.step_number == row["step_number"]
                )
            ).first()
            if exists:
                return False
            c.execute(checkpoints.insert().values(**row))
            return True

    def list_checkpoints(self, job_id: str, *, after=None, limit=10):
        with self.engine.connect() as c:
            return self._page(c, checkpoints, [checkpoints.c.job_id == job_id], after, limit)

    def delete_checkpoints_except(self, job_id: str, steps: list[int]) -> None:
        with self.engine.begin() as c:
            c.execute(
                checkpoints.delete().where(
                    checkpoints.c.job_id == job_id, checkpoints.c.step_number.not_in(steps)
                )
            )

    # -- models ------------------------------------------------------------------------------------
    def find_model_job(self, project_id: str, key: str) -> dict | None:
        """The project's job whose fine-tuned model has the 8-character ``key``."""
        return self._one(sa.select(jobs).where(jobs.c.project_id == project_id, jobs.c.model_key == key))

    def list_model_jobs(self, project_id: str) -> list[dict]:
        """Succeeded jobs with an undeleted fine-tuned model, oldest first."""
        return self._many(
            sa.select(jobs)
            .where(
                jobs.c.project_id == project_id, jobs.c.status == "succeeded", jobs.c.model_deleted.is_(False)
            )
            .order_by(jobs.c.seq)
        )

    # -- checkpoint permissions ------------------------------------------------------------------
    def add_permissions(
        self, checkpoint: str, job_id: str, step: int, owner_project_id: str, project_ids: list[str]
    ) -> list[dict]:
        """Grant each of ``project_ids`` the use of ``checkpoint``; the permission objects in
        the order asked (an existing grant is returned as it is, not duplicated)."""
        out = []
        with self.engine.begin() as c:
            for pid in project_ids:
                grant = sa.select(permissions).where(
                    permissions.c.checkpoint == checkpoint, permissions.c.project_id == pid
                )
                row = _first(c, grant)
                if row is None:
                    c.execute(
                        permissions.insert().values(
                            id=ids.permission_id(),
                            checkpoint=checkpoint,
                            job_id=job_id,
                            step_number=step,
                            owner_project_id=owner_project_id,
                            project_id=pid,
                            created_at=now(),
                        )
                    )
                    row = _first(c, grant)
                out.append(row)
        return out

    def list_permissions(
        self,
        owner_project_id: str,
        checkpoint: str,
        *,
        after=None,
        limit=10,
        ascending=False,
        project_id: str | None = None,
    ):
        where = [permissions.c.checkpoint == checkpoint, permissions.c.owner_project_id == owner_project_id]
        if project_id:
            where.append(permissions.c.project_id == project_id)
        with self.engine.connect() as c:
            return self._page(c, permissions, where, after, limit, ascending)

    def delete_permission(self, owner_project_id: str, checkpoint: str, permission_id: str) -> bool:
        with self.engine.begin() as c:
            res = c.execute(
                permissions.delete().where(
                    permissions.c.id == permission_id,
                    permissions.c.checkpoint == checkpoint,
                    permissions.c.owner_project_id == owner_project_id,
                )
            )
            return res.rowcount > 0

    def permission_for(self, checkpoint: str, project_id: str) -> dict | None:
        """The grant of ``checkpoint`` to ``project_id``, or None."""
        return self._one(
            sa.select(permissions).where(
                permissions.c.checkpoint == checkpoint, permissions.c.project_id == project_id
            )
        )

    def granted_to(self, project_id: str) -> list[dict]:
        """Every checkpoint permission granted to ``project_id``, oldest first."""
        return self._many(
            sa.select(permissions).where(permissions.c.project_id == project_id).order_by(permissions.c.seq)
        )
