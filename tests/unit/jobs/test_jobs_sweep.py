"""An idle worker deletes expired files (rows, then blobs), as the server's background thread does."""

from __future__ import annotations

from tunesmith.jobs import ids
from tunesmith.jobs.blobs import BlobStore
from tunesmith.jobs.settings import Settings
from tunesmith.jobs.store import Store, now
from tunesmith.jobs.worker import Worker


def test_an_idle_worker_sweeps_expired_files(tmp_path):
    settings = Settings(db=f"sqlite:///{tmp_path / 'jobs.db'}", data_dir=tmp_path / "data")
    store, blobs = Store(settings.db), BlobStore(settings.files_dir)
    project = store.ensure_project("a")["id"]
    made = {}
    for name, expires in (("expired", now() - 1), ("later", now() + 3600), ("never", None)):
        fid = ids.file_id()
        blobs.write(fid, b"{}\n")
        store.add_file(
            {
                "id": fid,
                "project_id": project,
                "bytes": 3,
                "created_at": now() - 7200,
                "expires_at": expires,
                "filename": name,
                "purpose": "fine-tune",
                "status": "processed",
                "status_details": None,
            }
        )
        made[name] = fid
    assert Worker(settings, store).run(once=True) == 0  # no job: it only sweeps
    assert not blobs.path(made["expired"]).exists() and store.sweep_expired_files() == []
    assert blobs.path(made["later"]).is_file() and blobs.path(made["never"]).is_file()
    assert {r["filename"] for r in store.list_files(project)[0]} == {"later", "never"}
    store.dispose()
