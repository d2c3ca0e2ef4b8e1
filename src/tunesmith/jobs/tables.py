"""The jobs database's tables (SQLAlchemy Core): projects, API keys, files, jobs, events,
checkpoints and checkpoint permissions. :class:`.store.Store` is the only reader and writer.

Every table has an integer ``seq`` (insertion order, the sort key of every listing); the object
tables also have their OpenAI ``id`` (:mod:`.ids`), the cursor of a listing. Columns added after
the first release are nullable, so :meth:`.store.Store` can add them to an older database.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), unique=True, nullable=False),
    sa.Column("name", sa.String(128), unique=True, nullable=False),
    sa.Column("created_at", sa.Integer, nullable=False),
)
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key_hash", sa.String(64), unique=True, nullable=False),
    sa.Column("hint", sa.String(32), nullable=False),
    sa.Column("project_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("revoked_at", sa.Integer),
    sa.Column("is_admin", sa.Boolean),  # NULL (keys made before admin keys existed) = not admin
)
files = sa.Table(
    "files",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), unique=True, nullable=False),
    sa.Column("project_id", sa.String(64), nullable=False, index=True),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("expires_at", sa.Integer),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("status_details", sa.Text),
)
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), unique=True, nullable=False),
    sa.Column("project_id", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("model", sa.String(300), nullable=False),
    sa.Column("training_file", sa.String(64), nullable=False),
    sa.Column("validation_file", sa.String(64)),
    sa.Column("suffix", sa.String(64)),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(32), nullable=False, index=True),
    sa.Column("error", sa.JSON),
    sa.Column("model_key", sa.String(16), nullable=False),
    sa.Column("fine_tuned_model", sa.String(400)),
    sa.Column("model_deleted", sa.Boolean, nullable=False, default=False),
    sa.Column("finished_at", sa.Integer),
    sa.Column("method", sa.JSON, nullable=False),
    sa.Column("metadata", sa.JSON),
    sa.Column("integrations", sa.JSON),
    sa.Column("result_files", sa.JSON, nullable=False),
    sa.Column("trained_tokens", sa.BigInteger),
    sa.Column("estimated_finish", sa.Integer),
    sa.Column("n_examples", sa.Integer),
    sa.Column("total_steps", sa.Integer),
    sa.Column("last_step", sa.Integer, nullable=False, default=0),
    sa.Column("worker_id", sa.String(128)),
    sa.Column("heartbeat_at", sa.Float),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    # Continued fine-tuning: the job whose final adapter (parent_step NULL) or checkpoint
    # adapter (step N) this job starts from. May be another project's job (a permission).
    sa.Column("parent_job_id", sa.String(64)),
    sa.Column("parent_step", sa.Integer),
)
events = sa.Table(
    "events",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), unique=True, nullable=False),
    sa.Column("job_id", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("level", sa.String(8), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("data", sa.JSON),
)
checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), unique=True, nullable=False),
    sa.Column("job_id", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("fine_tuned_model_checkpoint", sa.String(420), nullable=False),
    sa.Column("step_number", sa.Integer, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.UniqueConstraint("job_id", "step_number"),
)
permissions = sa.Table(
    # checkpoint.permission: project ``project_id`` may use checkpoint model ``checkpoint`` of
    # job ``job_id`` (owned by ``owner_project_id``). One row per (checkpoint, project).
    "permissions",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), unique=True, nullable=False),
    sa.Column("checkpoint", sa.String(420), nullable=False, index=True),
    sa.Column("job_id", sa.String(64), nullable=False),
    sa.Column("step_number", sa.Integer, nullable=False),
    sa.Column("owner_project_id", sa.String(64), nullable=False),
    sa.Column("project_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.UniqueConstraint("checkpoint", "project_id"),
)
