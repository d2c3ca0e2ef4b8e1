"""The jobs store on SQLite and on a real PostgreSQL: scoping, cursors, atomic claiming, leases."""

from __future__ import annotations

import threading
import time

import pytest

from tunesmith.jobs import ids
from tunesmith.jobs.store import CursorNotFound, now


def _job(project_id: str, **over) -> dict:
    row = {
        "id": ids.job_id(),
        "project_id": project_id,
        "created_at": now(),
        "model": "tiny",
        "training_file": ids.file_id(),
        "validation_file": None,
        "suffix": None,
        "seed": 1,
        "status": "queued",
        "error": None,
        "model_key": ids.model_key(),
        "method": {"type": "supervised", "supervised": {"hyperparameters": {}}},
        "metadata": None,
        "integrations": [],
        "result_files": [],
        "model_deleted": False,
        "last_step": 0,
        "attempts": 0,
    }
    row.update(over)
    return row


def test_keys_resolve_to_their_project_and_revoked_keys_do_not(store):
    key, project = store.create_key("alpha")
    assert store.project_for_key(key) == {"id": project["id"], "name": "alpha", "admin": False}
    assert store.project_for_key(key + "x") is None
    assert store.revoke_key(key) and store.project_for_key(key) is None
    hints = store.list_keys()
    assert len(hints) == 1 and key not in str(hints)


def test_objects_are_scoped_to_their_project(store):
    a, b = store.ensure_project("a")["id"], store.ensure_project("b")["id"]
    job = store.add_job(_job(a))
    assert store.get_job(a, job["id"])["id"] == job["id"]
    assert store.get_job(b, job["id"]) is None
    assert store.list_jobs(b) == ([], False)
    fid = ids.file_id()
    store.add_file(
        {
            "id": fid,
            "project_id": a,
            "bytes": 3,
            "created_at": now(),
            "expires_at": None,
            "filename": "x",
            "purpose": "fine-tune",
            "status": "processed",
            "status_details": None,
        }
    )
    assert store.get_file(b, fid) is None and not store.delete_file(b, fid)
    assert store.get_file(a, fid)["bytes"] == 3


def test_cursor_pages_are_newest_first_exclusive_and_complete(store):
    a = store.ensure_project("a")["id"]
    made = [store.add_job(_job(a))["id"] for _ in range(7)]
    seen, after = [], None
    while True:
        rows, more = store.list_jobs(a, after=after, limit=3)
        seen += [r["id"] for r in rows]
        if not more:
            break
        after = rows[-1]["id"]
    assert seen == made[::-1]
    with pytest.raises(CursorNotFound):
        store.list_jobs(a, after="ftjob-nope")
    store.update_job(made[2], metadata={"team": "x"})
    assert [r["id"] for r in store.list_jobs(a, metadata_filter={"team": "x"})[0]] == [made[2]]


def test_concurrent_claims_take_each_job_exactly_once(store):
    a = store.ensure_project("a")["id"]
    made = {store.add_job(_job(a))["id"] for _ in range(12)}
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(n):
        while True:
            job = store.claim_job(f"w{n}", stale_after=60)
            if job is None:
                return
            with lock:
                claimed.append(job["id"])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(made)  # every job once, none twice


def test_leases_expire_and_a_dead_workers_job_is_taken_over(store):
    a = store.ensure_project("a")["id"]
    job = store.add_job(_job(a))
    got = store.claim_job("w1", stale_after=60)
    store.update_job(job["id"], worker_id="w1", status="running")
    assert got["id"] == job["id"] and got["attempts"] == 1
    assert store.claim_job("w2", stale_after=60) is None  # w1 is alive
    assert store.heartbeat(job["id"], "w1") == "running"
    time.sleep(1.1)
    assert store.claim_job("w2", stale_after=60) is None
    taken = store.claim_job("w2", stale_after=1.0)  # w1 silent for > 1 s
    assert taken["id"] == job["id"] and taken["worker_id"] == "w2" and taken["attempts"] == 2
    assert store.heartbeat(job["id"], "w1") is None  # w1 lost the lease
    assert store.update_job(job["id"], worker_id="w1", status="succeeded") is None


def test_requeue_stale_moves_running_jobs_back_to_queued_with_an_event(store):
    a = store.ensure_project("a")["id"]
    job = store.add_job(_job(a, status="running", worker_id="w1", heartbeat_at=time.time() - 100))
    fresh = store.add_job(_job(a, status="running", worker_id="w2", heartbeat_at=time.time()))
    assert store.requeue_stale(30) == [job["id"]]
    assert store.get_job(a, job["id"])["status"] == "queued"
    assert store.get_job(a, fresh["id"])["status"] == "running"
    events, _ = store.list_events(job["id"])
    assert events[0]["level"] == "warn" and "resume" in events[0]["message"]


def test_update_job_only_applies_in_the_expected_status(store):
    a = store.ensure_project("a")["id"]
    job = store.add_job(_job(a, status="cancelled"))
    assert store.update_job(job["id"], expect_status=("running",), status="succeeded") is None
    assert store.get_job(a, job["id"])["status"] == "cancelled"


def test_checkpoints_are_recorded_once_per_step(store):
    a = store.ensure_project("a")["id"]
    job = store.add_job(_job(a))
    row = {
        "job_id": job["id"],
        "created_at": now(),
        "fine_tuned_model_checkpoint": "m",
        "metrics": {"step": 3},
    }
    assert store.add_checkpoint({**row, "id": ids.checkpoint_id(), "step_number": 3})
    assert not store.add_checkpoint({**row, "id": ids.checkpoint_id(), "step_number": 3})
    store.add_checkpoint({**row, "id": ids.checkpoint_id(), "step_number": 6})
    store.delete_checkpoints_except(job["id"], [6])
    assert [c["step_number"] for c in store.list_checkpoints(job["id"])[0]] == [6]


def test_metric_events_and_last_step_land_together_or_not_at_all(store):
    """A worker killed while publishing must leave events and ``last_step`` consistent: the
    worker resuming the job republishes exactly the steps after ``last_step``."""
    a = store.ensure_project("a")["id"]
    job = store.add_job(_job(a, status="running", worker_id="w1", heartbeat_at=time.time()))
    rows = [(f"Step {s}/9", {"step": s}) for s in (1, 2, 3)]
    assert store.add_metric_events(job["id"], "w1", rows, last_step=3)
    assert store.get_job(a, job["id"])["last_step"] == 3
    # a worker that lost the lease writes nothing at all
    assert not store.add_metric_events(job["id"], "w2", [("Step 4/9", {"step": 4})], last_step=4)
    events, _ = store.list_events(job["id"], limit=10)
    assert sorted(e["data"]["step"] for e in events if e["type"] == "metrics") == [1, 2, 3]
    assert store.get_job(a, job["id"])["last_step"] == 3


def test_admin_keys_are_hashed_and_flagged(store):
    key, project = store.create_key("alpha", admin=True)
    assert store.project_for_key(key) == {"id": project["id"], "name": "alpha", "admin": True}
    assert key not in str(store.list_keys()) and store.list_keys()[0]["is_admin"] is True
    assert store.project_exists(project["id"]) and not store.project_exists("proj_nope")


def test_permissions_are_unique_per_project_scoped_to_their_owner_and_paged(store):
    owner, others = store.ensure_project("a")["id"], [store.ensure_project(f"p{i}")["id"] for i in range(5)]
    ckpt = "ft:tiny:personal::AAAAAAAA:ckpt-step-3"
    made = store.add_permissions(ckpt, "ftjob-x", 3, owner, others[:3])
    again = store.add_permissions(ckpt, "ftjob-x", 3, owner, [others[1], others[3], others[4]])
    assert again[0] == made[1] and [r["project_id"] for r in again] == [others[1], others[3], others[4]]
    assert all(r["id"].startswith("cp_") and len(r["id"]) == 27 for r in made + again)
    rows, more = store.list_permissions(owner, ckpt, limit=2)
    assert [r["project_id"] for r in rows] == [others[4], others[3]] and more  # newest first
    rows, more = store.list_permissions(owner, ckpt, after=rows[-1]["id"], limit=10, ascending=False)
    assert [r["project_id"] for r in rows] == others[2::-1] and not more
    assert store.list_permissions(others[0], ckpt) == ([], False)  # only the owner sees them
    assert [r["project_id"] for r in store.list_permissions(owner, ckpt, project_id=others[2])[0]] == [
        others[2]
    ]
    assert store.permission_for(ckpt, others[0])["id"] == made[0]["id"]
    assert not store.delete_permission(others[0], ckpt, made[0]["id"])
    assert (
        store.delete_permission(owner, ckpt, made[0]["id"]) and store.permission_for(ckpt, others[0]) is None
    )
    assert [g["checkpoint"] for g in store.granted_to(others[1])] == [ckpt]


def test_expired_files_vanish_then_are_swept(store):
    a = store.ensure_project("a")["id"]
    t0 = now()
    row = {
        "project_id": a,
        "bytes": 1,
        "created_at": t0,
        "filename": "x",
        "purpose": "fine-tune",
        "status": "processed",
        "status_details": None,
    }
    keep, expiring = ids.file_id(), ids.file_id()
    store.add_file({**row, "id": keep, "expires_at": None})
    store.add_file({**row, "id": expiring, "expires_at": t0 + 3600})
    assert store.sweep_expired_files() == [] and store.get_file(a, expiring) is not None
    store.clock = lambda: t0 + 3600  # the expiry instant: gone for every reader
    assert store.get_file(a, expiring) is None
    assert [r["id"] for r in store.list_files(a)[0]] == [keep]
    assert store.sweep_expired_files() == [expiring] and store.sweep_expired_files() == []
    store.clock = time.time
    assert store.get_file(a, expiring) is None and store.get_file(a, keep) is not None


def test_a_database_from_an_earlier_version_gains_the_new_columns(tmp_path):
    import sqlalchemy as sa

    from tunesmith.jobs.store import Store

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as c:  # api_keys as the first release made it (no is_admin)
        c.execute(
            sa.text(
                "CREATE TABLE api_keys (seq INTEGER PRIMARY KEY, key_hash VARCHAR(64) UNIQUE NOT NULL, "
                "hint VARCHAR(32) NOT NULL, project_id VARCHAR(64) NOT NULL, created_at INTEGER NOT NULL, "
                "revoked_at INTEGER)"
            )
        )
    engine.dispose()
    store = Store(url)
    key, _ = store.create_key("old", admin=True)
    assert store.project_for_key(key)["admin"] is True
    store.dispose()
