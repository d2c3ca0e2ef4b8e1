"""The self-hosted OpenAI fine-tuning API (``tunesmith server`` / ``tunesmith worker``).

- :mod:`.ids` — object ids, ``ft:`` model ids, API-key hashing;
- :mod:`.store` — the SQLAlchemy store (SQLite default, PostgreSQL by URL) and job claiming;
- :mod:`.blobs` — uploaded files on disk, named by generated id only, and the bounded
  multipart parser; :mod:`.bodies` — the one reader of JSON request bodies;
- :mod:`.errors` — OpenAI's error envelope, and the last-resort JSON 500;
- :mod:`.spec` — create-job validation and hyperparameter resolution (OpenAI's ranges);
- :mod:`.app` — the FastAPI app: builds the :class:`.service.Service` the routes share and
  includes the route modules :mod:`.routes_files`, :mod:`.routes_jobs`,
  :mod:`.routes_permissions` (checkpoint permissions, admin keys), :mod:`.routes_graders`,
  :mod:`.routes_models`, :mod:`.routes_inference` (answered by :mod:`tunesmith.serve` through
  :mod:`.infer`) and :mod:`.routes_dashboard` (the web UI at ``/``);
  :mod:`.access` — which ``ft:`` models a project may use (own, or shared by permission);
- :mod:`.worker` — claims jobs, validates files, runs ``python -m tunesmith train`` in a
  subprocess, heartbeats and streams metrics as events; :mod:`.translate` — a job -> its run
  config (also ``tunesmith openai pull``'s); :mod:`.redact` — job messages without
  server paths.

The web stack is imported only here; the training path never imports this package.
"""
