"""``tunesmith openai pull | record | push``: migrate fine-tuning work from OpenAI (or any server
speaking its fine-tuning API) to tunesmith. See docs/migrate-from-openai.md."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError

DEFAULT_OPEN_BASE = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
OPENAI_URL = "https://api.openai.com/v1"


def add_openai_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "openai",
        help="migrate from OpenAI fine-tuning: pull jobs and data, record "
        "golden answers, push jobs to a tunesmith server",
    )
    sub = p.add_subparsers(dest="openai_command", required=True)

    q = sub.add_parser("pull", help="download every fine-tuning job's files and write one run config per job")
    _source(q)
    q.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="migration folder (manifest.json, SUMMARY.md, "
        "files/, runs/<job id>/config.yaml); pulling again resumes and skips what is there",
    )
    q.add_argument(
        "--base-model",
        action="append",
        default=[],
        metavar="PATH|NAME=PATH",
        help="open model (folder or .gguf) standing in for the jobs' base models: PATH for all, "
        f"NAME=PATH for one OpenAI base (repeatable; default {DEFAULT_OPEN_BASE})",
    )
    q.add_argument(
        "--adapter",
        default="lora",
        choices=("lora", "dora", "none"),
        help="adapter of every config (the learning rate is its base rate x the job's multiplier)",
    )
    q.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="setting added to every config, e.g. train.max_length=2048 (repeatable)",
    )
    q.add_argument(
        "--judge-model",
        metavar="PATH",
        help="local model (folder or .gguf) that runs the score_model / label_model graders of "
        "reinforcement jobs (without it such jobs are not mapped)",
    )
    q.add_argument("--job", action="append", default=[], metavar="ID", help="pull only this job (repeatable)")
    q.set_defaults(func=_cmd_pull)

    r = sub.add_parser("record", help="record a model's answers to a held-out set (resumable)")
    _source(r)
    r.add_argument(
        "--model", required=True, help="the model to ask, e.g. ft:gpt-4o-mini-2024-07-18:org:x:abc123"
    )
    r.add_argument(
        "--data",
        required=True,
        help="held-out JSONL: chat rows (the last assistant turn is the "
        "reference), chat rows without an answer, or prompt rows",
    )
    r.add_argument(
        "--out",
        default="recorded.jsonl",
        help="recorded answers (JSONL, appended; a rerun skips "
        "recorded rows; default recorded.jsonl, what eval --against reads)",
    )
    r.add_argument("--temperature", type=float, default=0.0, help="default 0")
    r.add_argument("--max-tokens", type=int, default=256, help="default 256")
    r.add_argument("--seed", type=int, default=0, help="default 0")
    r.add_argument("--top-p", type=float, help="sent only when given")
    r.add_argument("--limit", type=int, help="the first N rows only")
    r.add_argument(
        "--max-retries",
        type=int,
        default=6,
        help="tries per row on 429 / 5xx / connection errors, with exponential backoff (default 6)",
    )
    r.set_defaults(func=_cmd_record)

    s = sub.add_parser("push", help="re-create pulled jobs on a tunesmith server (idempotent)")
    s.add_argument("--base-url", required=True, help="the target server, e.g. http://localhost:8000/v1")
    s.add_argument("--api-key", required=True, help="an API key of the target server")
    s.add_argument("--from", dest="folder", required=True, metavar="DIR", help="the folder pulled into")
    s.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME|SOURCE=NAME",
        help="the target's model name for the jobs' base models: NAME for all, SOURCE=NAME for "
        "one (repeatable; default: the same name as on the source)",
    )
    s.add_argument("--job", action="append", default=[], metavar="ID", help="push only this job (repeatable)")
    s.set_defaults(func=_cmd_push)


def _source(p) -> None:
    p.add_argument(
        "--base-url",
        default=os.environ.get("OPENAI_BASE_URL") or OPENAI_URL,
        help=f"the API (default $OPENAI_BASE_URL or {OPENAI_URL})",
    )
    p.add_argument(
        "--api-key", default=os.environ.get("OPENAI_API_KEY", ""), help="API key (default $OPENAI_API_KEY)"
    )


def parse_pairs(items: list[str], option: str, *, is_default=lambda v: "=" not in v) -> dict[str, str]:
    """``VALUE`` (the default, key ``*``) and ``NAME=VALUE`` items -> a mapping; a name given
    twice or two defaults is a ConfigError."""
    out: dict[str, str] = {}
    for item in items:
        name, value = ("*", item) if is_default(item) else item.split("=", 1)
        if not name or not value or name in out:
            raise ConfigError(
                f"{option} {item!r}: give one default VALUE and NAME=VALUE at most once per name"
            )
        out[name] = value
    return out


def _open_bases(items: list[str]) -> dict[str, str]:
    """``--base-model`` -> {OpenAI base name or ``*``: absolute model path}, each checked to be a
    model folder (config.json) or a .gguf file."""
    bases = parse_pairs(
        items or [DEFAULT_OPEN_BASE], "--base-model", is_default=lambda v: "=" not in v or Path(v).exists()
    )
    for name, path in bases.items():
        p = Path(path).expanduser()
        if not ((p / "config.json").is_file() or (p.is_file() and p.suffix.lower() == ".gguf")):
            hint = " (the shipped SmolLM2 model: see docs/gguf.md)" if path == DEFAULT_OPEN_BASE else ""
            raise ConfigError(f"--base-model {path}: not a model folder (config.json) or a .gguf file{hint}")
        bases[name] = os.path.abspath(p)  # as given (a symlinked model keeps its name)
    return bases


def _check_sets(items: list[str]) -> list[str]:
    for item in items:
        if "=" not in item or item.split(".", 1)[0] not in ("train", "adapter", "grpo", "data"):
            raise ConfigError(
                f"--set {item!r}: expected train.KEY=VALUE, adapter.KEY=VALUE or grpo.KEY=VALUE"
            )
    return list(items)


def _cmd_pull(args) -> int:
    from ..migrate.client import make_client
    from ..migrate.mapping import MapOptions
    from ..migrate.pull import pull

    options = MapOptions(
        base_models=_open_bases(args.base_model),
        adapter=args.adapter,
        overrides=_check_sets(args.set),
        judge_model=str(Path(args.judge_model).resolve()) if args.judge_model else None,
    )
    client = make_client(args.base_url, args.api_key, max_retries=0)
    manifest = pull(
        client, Path(args.out), options, base_url=args.base_url, job_ids=args.job or None, log=print
    )
    jobs = manifest["jobs"].values()
    counts = {s: sum(j["status"] == s for j in jobs) for s in ("mapped", "unmapped", "skipped")}
    print(
        f"{counts['mapped']} mapped, {counts['unmapped']} not mapped, {counts['skipped']} skipped -> "
        f"{Path(args.out) / 'SUMMARY.md'}"
    )
    return 0


def _cmd_record(args) -> int:
    from ..migrate.client import make_client
    from ..migrate.record import RecordOptions, record

    for name, value in (("--max-tokens", args.max_tokens), ("--max-retries", args.max_retries)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    options = RecordOptions(
        model=args.model,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        seed=args.seed,
        top_p=args.top_p,
        attempts=args.max_retries,
    )
    client = make_client(args.base_url, args.api_key, max_retries=0)
    result = record(client, args.data, args.out, options, limit=args.limit)
    print(
        f"recorded {result.recorded} answers ({result.already} were already recorded) of "
        f"{result.total} rows -> {args.out}"
    )
    return 0


def _cmd_push(args) -> int:
    from ..migrate.client import make_client
    from ..migrate.push import push

    models = parse_pairs(args.model, "--model")
    client = make_client(args.base_url, args.api_key, max_retries=0)
    manifest = push(
        client, Path(args.folder), base_url=args.base_url, models=models, job_ids=args.job or None, log=print
    )
    failed = [j for j, p in manifest["push"][args.base_url].items() if "error" in p and "job" not in p]
    print(
        f"pushed {len(manifest['push'][args.base_url]) - len(failed)} job(s) to {args.base_url}"
        + (f"; {len(failed)} refused (see {Path(args.folder) / 'SUMMARY.md'})" if failed else "")
    )
    return 1 if failed else 0
