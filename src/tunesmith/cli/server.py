"""``tunesmith server`` (the OpenAI fine-tuning API), ``tunesmith server keys …`` and
``tunesmith worker``. Needs the ``service`` extra (FastAPI, uvicorn, SQLAlchemy …)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import ConfigError
from .options import add_listen_arguments


def _common(p: argparse.ArgumentParser, models: bool = True) -> None:
    # Sub-commands (server keys …) repeat --data/--db with SUPPRESS defaults, so a value given
    # before the sub-command ("server --data X keys create") is not overwritten by a default.
    sub = not models
    p.add_argument(
        "--data",
        default=argparse.SUPPRESS if sub else os.environ.get("TUNESMITH_DATA", "tunesmith-data"),
        help="data folder: uploaded files and job runs (default: ./tunesmith-data, or $TUNESMITH_DATA)",
    )
    p.add_argument(
        "--db",
        default=argparse.SUPPRESS if sub else os.environ.get("TUNESMITH_DB"),
        help="database URL: sqlite:///PATH or postgresql://USER:PW@HOST/DB "
        "(default: DATA/tunesmith.db, or $TUNESMITH_DB)",
    )
    if models:
        p.add_argument(
            "--base-model",
            action="append",
            default=[],
            metavar="NAME=PATH",
            help="allow-listed base model: clients use NAME as 'model' (repeatable)",
        )
        p.add_argument(
            "--tinker-model",
            action="append",
            default=[],
            metavar="NAME=PATH",
            help="a base model of the Tinker-compatible API (/api/v1) under NAME, which may be "
            "org/model like HuggingFaceTB/SmolLM2-135M-Instruct (repeatable; every --base-model "
            "is one too; docs/tinker.md)",
        )
        p.add_argument(
            "--grader-model",
            action="append",
            default=[],
            metavar="NAME=PATH",
            help="judge of score_model/label_model graders that name NAME as their model: a model "
            "folder or .gguf file (repeatable; base models are judges under their own names)",
        )
        p.add_argument(
            "--stale-after",
            type=float,
            default=30.0,
            help="seconds without a worker heartbeat before a running job is resumed elsewhere",
        )


def _settings(args):
    from ..jobs.settings import Settings, parse_base_models, parse_grader_models, parse_tinker_models

    data = Path(args.data).resolve()
    data.mkdir(parents=True, exist_ok=True)
    db = args.db or f"sqlite:///{data / 'tunesmith.db'}"
    kwargs = {}
    if hasattr(args, "base_model"):
        kwargs["base_models"] = parse_base_models(args.base_model)
        kwargs["stale_after"] = args.stale_after
        kwargs["grader_models"] = parse_grader_models(args.grader_model)
        kwargs["tinker_models"] = parse_tinker_models(getattr(args, "tinker_model", []))
    if getattr(args, "max_upload_mb", None):
        kwargs["max_upload_bytes"] = int(args.max_upload_mb * 1024 * 1024)
    if getattr(args, "poll", None):
        kwargs["poll_interval"] = args.poll
    if getattr(args, "adapter", None):
        kwargs["adapter"] = args.adapter
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        kwargs["threads"] = args.threads
    if getattr(args, "set", None):
        for item in args.set:
            if "=" not in item or item.split(".", 1)[0] not in ("train", "adapter", "grpo"):
                raise ConfigError(
                    f"--set {item!r}: expected train.KEY=VALUE, adapter.KEY=VALUE or "
                    "grpo.KEY=VALUE (reinforcement jobs only)"
                )
        kwargs["train_overrides"] = list(args.set)
    return Settings(db=db, data_dir=data, **kwargs)


def _cmd_server(args) -> int:
    if args.server_command == "keys":
        return _cmd_keys(args)
    import uvicorn

    from ..jobs.app import create_app
    from ..jobs.settings import tinker_models
    from ..threads import available_cores, service_split, use_threads

    settings = _settings(args)
    # Inference's share of the cores, before torch loads; a server that trains Tinker models
    # itself (docs/tinker.md) takes every core unless --threads says otherwise.
    default = available_cores() if settings.tinker_models else service_split()[1]
    use_threads(settings.threads or default)
    if not settings.base_models and not settings.tinker_models:
        print("warning: no --base-model given; every job will be refused")
    if tinker_models(settings):
        print(f"Tinker API at /api/v1 for {', '.join(tinker_models(settings))} (TINKER_API_KEY=tml-<key>)")
    print(
        f"tunesmith server on http://{args.host}:{args.port}/ (dashboard) — API at /v1, database {settings.db}"
    )
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _cmd_keys(args) -> int:
    from ..jobs.store import Store

    settings = _settings(args)
    store = Store(settings.db)
    if args.keys_command == "create":
        key, project = store.create_key(args.project, admin=args.admin)
        print(key)  # alone on stdout, so KEY=$(tunesmith server keys create …) works
        kind = "an admin key" if args.admin else "a key"
        print(
            f"{kind} for project {project['name']} = {project['id']}; the key is shown only once",
            file=sys.stderr,
        )
    elif args.keys_command == "list":
        for row in store.list_keys():
            state = "revoked" if row["revoked_at"] else "active"
            admin = "  admin" if row["is_admin"] else ""
            print(f"{row['hint']}  project={row['name']} ({row['project_id']})  {state}{admin}")
    elif args.keys_command == "revoke":
        if not store.revoke_key(args.key):
            raise ConfigError("no such active key")
        print("revoked")
    return 0


def _cmd_worker(args) -> int:
    import logging

    from ..jobs.worker import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    worker = Worker(_settings(args))
    print(f"worker {worker.worker_id} polling {worker.settings.db}", flush=True)
    try:
        worker.run(once=args.once)
    except KeyboardInterrupt:
        worker.stop_event.set()
    return 0


def _threads_argument(p, what: str, share: int) -> None:
    from ..threads import available_cores, service_split

    cores = available_cores()
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help=f"compute threads of {what}; default {service_split(cores)[share]} of this machine's "
        f"{cores} cores (a quarter serves, the rest trains: a worker and a server share the "
        "machine without oversubscribing it; docs/service.md)",
    )


def add_server_commands(sub) -> None:
    p = sub.add_parser(
        "server",
        help="fine-tuning service: OpenAI's /v1/fine_tuning API with workers and a dashboard "
        "(docs/service.md; to serve a model for inference, `serve`)",
    )
    _common(p)
    add_listen_arguments(p)
    p.add_argument("--max-upload-mb", type=float, default=512.0, help="largest accepted upload (MB)")
    p.add_argument(
        "--log-level", default="info", help="server log verbosity: critical | error | warning | info | debug"
    )
    _threads_argument(p, "inference (generation by fine-tuned models)", 1)
    p.set_defaults(func=_cmd_server, server_command=None)
    keys = p.add_subparsers(dest="server_command")
    k = keys.add_parser("keys", help="manage API keys")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    c = ksub.add_parser("create", help="create a key for a project (printed once)")
    c.add_argument("--project", default="default", help="project name (created if new)")
    c.add_argument(
        "--admin", action="store_true", help="an admin key: also manages the project's checkpoint permissions"
    )
    ksub.add_parser("list", help="list keys (hints only)")
    r = ksub.add_parser("revoke", help="revoke a key")
    r.add_argument("key", help="the full API key to revoke")
    for q in ksub.choices.values():
        _common(q, models=False)

    w = sub.add_parser("worker", help="run a fine-tuning worker (claims and trains jobs)")
    _common(w)
    w.add_argument("--poll", type=float, default=0.5, help="heartbeat / progress interval in seconds")
    w.add_argument(
        "--adapter",
        choices=["lora", "dora", "none"],
        default="lora",
        help="adapter type of the jobs' runs (none: full)",
    )
    _threads_argument(w, "each training run", 0)
    w.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra run-config setting for every job, e.g. train.max_length=512 or (reinforcement "
        "jobs) grpo.max_new_tokens=64 (repeatable)",
    )
    w.add_argument("--once", action="store_true", help="exit when no job is waiting")
    w.set_defaults(func=_cmd_worker)
