"""``tunesmith data check | show | split``: thin command-line wrappers over ``tunesmith.data``.

:func:`add_data_commands` adds the ``data`` command to the main parser; every sub-command's
function returns the process exit code (check: 0 usable, 1 not). User errors propagate as
:class:`~tunesmith.errors.TunesmithError` for the main CLI to print (exit 2).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ..data.tools.check import METHODS


def add_data_commands(subparsers: Any) -> Any:
    """Add ``data`` with its five sub-commands: check, show, split, scrub, convert."""
    data = subparsers.add_parser(
        "data",
        help="data files: check, show, split, scrub, convert",
        description="Work with training data files: check (validate, token statistics, PII), "
        "show (render through the chat template), split (train/eval), scrub (redact PII) and "
        "convert (between chat formats). `tunesmith data COMMAND --help` for each.",
    )
    sub = data.add_subparsers(dest="data_command", required=True)

    p = sub.add_parser("check", help="validate every line; token statistics, duplicates")
    p.add_argument("file", help="training data (.jsonl, .json, .csv, .parquet, .txt)")
    p.add_argument("--model", help="model folder: special tokens, token statistics, estimate")
    _chat_template_argument(p)
    p.add_argument("--method", choices=METHODS, default="sft", help="check the rows as this method's data")
    p.add_argument("--max-length", type=int, help="truncation length (default 1024)")
    p.add_argument(
        "--adapter",
        choices=("lora", "dora", "qlora", "none"),
        default="lora",
        help="for the time/memory estimate (none = full fine-tuning)",
    )
    p.add_argument("--eval", help="held-out file: checked too, and its overlap with FILE")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("show", help="render examples through the chat template, trained tokens marked")
    p.add_argument("file", help="training data file")
    p.add_argument("--model", required=True, help="model (or tokenizer) folder")
    _chat_template_argument(p)
    p.add_argument("-n", type=int, default=3, help="how many examples (default 3)")
    p.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour trained tokens (auto: on a terminal)",
    )
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser("split", help="deterministic, duplicate-aware train/eval split")
    p.add_argument("file", help="a .jsonl file (never overwritten)")
    p.add_argument("--eval-fraction", type=float, default=0.1, help="fraction of rows held out for eval")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed (same seed, same split)")
    p.add_argument("--out-dir", help="output folder (default: <stem>_split beside FILE)")
    p.set_defaults(func=_cmd_split)

    p = sub.add_parser("scrub", help="redact e-mails, phones, cards, IBANs, SSNs, IPs and secrets")
    p.add_argument("file", help="input data file (never overwritten)")
    p.add_argument("--out", required=True, help="cleaned JSONL output")
    p.add_argument("--report", help="JSON report: counts by type and line (never the secrets)")
    p.set_defaults(func=_cmd_scrub)

    p = sub.add_parser("convert", help="convert between chat / ShareGPT / Alpaca / prompt-completion")
    p.add_argument("file", help="input data file (never overwritten)")
    p.add_argument("--to", required=True, help="openai-chat | sharegpt | alpaca | prompt-completion")
    p.add_argument("--out", required=True, help="output JSONL")
    p.add_argument("--skip-lossy", action="store_true", help="skip (and count) rows the target cannot hold")
    p.set_defaults(func=_cmd_convert)
    return sub


def _chat_template_argument(p) -> None:
    p.add_argument(
        "--chat-template",
        metavar="NAME|FILE",
        help="render chats with this template instead of the model's own, as model.chat_template "
        "does: chatml, qwen, llama3, mistral, gemma, phi3, or a .jinja file",
    )


# ---- check ----------------------------------------------------------------------------------


def _cmd_check(args) -> int:
    from ..data.tools.check import check_file

    tokenizer = None
    if args.chat_template and not args.model:
        from ..errors import TunesmithError

        raise TunesmithError("--chat-template needs --model (the tokenizer it is applied to)")
    if args.model:
        from ..models.load import load_tokenizer

        tokenizer = load_tokenizer(args.model, args.chat_template)
    with _progress_reporter(args.file) as progress:
        report = check_file(
            args.file,
            tokenizer=tokenizer,
            method=args.method,
            max_length=args.max_length,
            eval_path=args.eval,
            model_dir=args.model,
            adapter=args.adapter,
            progress=progress,
        )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(format_report(report.to_dict()))
    return 0 if report.ok else 1


def format_report(report: dict[str, Any], per_code: int = 10) -> str:
    """The human-readable report: verdict, problems (``per_code`` per code), stats, duplicates."""
    lines = [
        f"{report['path']}: {report['n_examples']} examples, format "
        f"{report['format'] or 'unknown'}, method {report['method']}"
    ]
    for kind in ("errors", "warnings"):
        counts = report[f"{kind[:-1]}_counts"]
        if not counts:
            continue
        lines.append(f"{kind} ({sum(counts.values())}):")
        for code, count in sorted(counts.items()):
            lines.append(f"  {code} × {count}")
            listed = [p for p in report[kind] if p["code"] == code][:per_code]
            lines.extend(f"    {_place(p)}{p['message']}" for p in listed)
            if count > len(listed):
                lines.append(f"    … and {count - len(listed)} more (--json lists up to 100)")
    lines.extend(_format_tokens(report["stats"]))
    lines.extend(_format_estimate(report["stats"].get("estimate")))
    dup = report["duplicates"]
    if dup.get("group_count"):
        lines.append(f"duplicates: {dup['group_count']} group(s)")
        lines.extend(
            f"  {g['kind']}: lines {', '.join(map(str, g['lines']))}" for g in dup["groups"][:per_code]
        )
    if "eval_overlap_count" in dup:
        lines.append(
            f"eval overlap: {dup['eval_overlap_count']} of "
            f"{report['stats'].get('eval_examples', 0)} eval examples are in the "
            "training file"
        )
    lines.append("OK: the file is usable" if report["ok"] else "NOT OK: fix the errors above")
    return "\n".join(lines)


def _place(problem: dict[str, Any]) -> str:
    where = "eval " if problem["param"] == "validation_file" else ""
    if problem["line"] is not None:
        where += f"line {problem['line']}"
        if problem["message_index"]:
            where += f", message {problem['message_index']}"
    return f"{where}: " if where else ""


def _format_tokens(stats: dict[str, Any]) -> list[str]:
    tokens = stats.get("tokens")
    if not tokens or "examples" not in tokens:
        return []
    return [
        f"tokens per example: min {tokens['min']}, median {tokens['median']:g}, "
        f"p95 {tokens['p95']}, max {tokens['max']} (mean {tokens['mean']})",
        f"tokens in total: {tokens['total_after_truncation']:,} after truncation, "
        f"{tokens['trained']:,} trained (loss mask)",
        f"over max_length {tokens['max_length']}: {tokens['over_max_length']} (truncated from the end)",
    ]


def _format_estimate(est: dict[str, Any] | None) -> list[str]:
    if not est:
        return []
    mem = est["memory_bytes"]
    gib = 1024**3
    line = (
        f"estimate ({est['method']}, {est['adapter']}; rough, ±2x): "
        f"{est['params'] / 1e6:.1f}M params, {est['trainable_params'] / 1e6:.2f}M trainable, "
        f"{est['flops_per_token'] / 1e6:.0f} MFLOP/token"
    )
    out = [line]
    if est.get("seconds_per_epoch") is not None:
        out.append(
            f"  time per epoch ≈ {_duration(est['seconds_per_epoch'])} at "
            f"{est['flop_rate'] / 1e9:.0f} GFLOP/s effective"
        )
    out.append(
        f"  memory ≈ {mem['total'] / gib:.2f} GiB (runtime {mem['runtime'] / gib:.2f}, weights {mem['weights'] / gib:.2f}, "
        f"trainable state {mem['trainable_state'] / gib:.2f}, activations "
        f"{mem['activations'] / gib:.2f})"
    )
    return out


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class _progress_reporter:
    """Context manager yielding a ``progress(done, total)`` callback over the file's bytes:
    :class:`tunesmith.progress.TaskProgress` (a rich bar on a terminal, lines otherwise)."""

    def __init__(self, label: str):
        from ..progress import TaskProgress

        self._task = TaskProgress(f"checking {label}", unit="bytes")

    def __enter__(self):
        self._task.__enter__()
        return self._task.update

    def __exit__(self, *exc) -> None:
        self._task.__exit__(*exc)


# ---- show / split ---------------------------------------------------------------------------


def _cmd_show(args) -> int:
    from ..data.tools.show import show_examples
    from ..models.load import load_tokenizer

    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    tokenizer = load_tokenizer(args.model, args.chat_template)
    print(show_examples(args.file, tokenizer, args.n, color=color), end="")
    if not color:
        print("([[...]] = trained tokens)")
    return 0


def _cmd_split(args) -> int:
    from ..data.tools.split import split_file

    result = split_file(args.file, eval_fraction=args.eval_fraction, seed=args.seed, out_dir=args.out_dir)
    print(
        f"{result.n_train} train -> {result.train_path}\n{result.n_eval} eval -> "
        f"{result.eval_path}\n({result.n_groups} groups of distinct examples; duplicates "
        "kept on one side)"
    )
    return 0


def _cmd_scrub(args) -> int:
    from ..data.tools.scrub import scrub_file

    report = scrub_file(args.file, args.out, args.report)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(report["by_type"].items())) or "nothing found"
    print(
        f"scrubbed {report['rows']} rows -> {report['output']}: {report['total']} redactions "
        f"in {report['rows_with_findings']} rows ({kinds})"
        + (f"; report: {args.report}" if args.report else "")
    )
    return 0


def _cmd_convert(args) -> int:
    from ..data.tools.convert import convert_file

    report = convert_file(args.file, args.out, args.to, skip_lossy=args.skip_lossy)
    print(
        f"converted {report['written']} of {report['rows']} rows from {report['from']} to "
        f"{report['to']} -> {report['output']}"
        + (f" ({report['skipped_lossy']} lossy rows skipped)" if report["skipped_lossy"] else "")
    )
    return 0
