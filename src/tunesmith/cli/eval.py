"""``tunesmith eval CONFIG_OR_RUN --data heldout.jsonl [--compare base] [--lm-eval TASKS]`` (see
docs/evaluation.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .compute import add_threads_argument
from .options import add_sampling_arguments, sampling_options


def add_eval_command(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval", help="held-out loss, generation metrics, model comparison with intervals, HTML report"
    )
    p.add_argument(
        "target",
        metavar="CONFIG_OR_RUN",
        help="run config (.yaml), run directory, or a model / adapter folder",
    )
    p.add_argument("--data", help="held-out file (default: the run's data.eval)")
    p.add_argument(
        "--model", help="what to evaluate: final (default for a run), latest, step-N, base, or a folder"
    )
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="SPEC",
        help="compare with another model: base, final, latest, step-N or a folder (repeatable)",
    )
    p.add_argument("--out", help="report folder (default RUN/eval)")
    p.add_argument("--limit", type=int, help="evaluate the first N rows only")
    add_sampling_arguments(
        p, max_new_tokens=128, seed_help="sampling and bootstrap seed (recorded in the report)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="prompts generated together")
    p.add_argument(
        "--max-length", type=int, default=1024, help="truncate scored examples to this many tokens"
    )
    p.add_argument("--system", help="system prompt added to prompts that have none")
    p.add_argument("--no-generate", action="store_true", help="likelihood metrics only")
    p.add_argument("--regex", help="score replies by re.search(REGEX, reply)")
    p.add_argument(
        "--json", action="store_true", dest="check_json", help="score whether replies are valid JSON"
    )
    p.add_argument("--json-schema", help="JSON Schema file replies must validate against")
    p.add_argument(
        "--scorer",
        action="append",
        default=[],
        metavar="MODULE:FUNCTION",
        help="user scorer fn(prediction, example) -> float in [0, 1] (repeatable)",
    )
    p.add_argument(
        "--grader",
        action="append",
        default=[],
        metavar="FILE",
        help="OpenAI grader (JSON/YAML file) scoring each reply as grader:<name>; "
        "item = the held-out row (repeatable; see docs/graders.md)",
    )
    p.add_argument(
        "--judge-model",
        action="append",
        default=[],
        metavar="PATH|NAME=PATH",
        help="local model (folder or .gguf) running the graders' score_model / "
        "label_model graders; NAME=PATH maps one grader model name (repeatable)",
    )
    p.add_argument("--reward-model", help="reward-model folder: scores replies, pairwise accuracy on pairs")
    p.add_argument(
        "--against",
        metavar="RECORDED.jsonl",
        help="answers recorded from another model (tunesmith openai record): compared as "
        "the model 'recorded' with the same scorers and graders, plus agree:<metric> "
        "(see docs/migrate-from-openai.md)",
    )
    p.add_argument(
        "--lm-eval",
        metavar="TASKS",
        help="also run lm-evaluation-harness (HF backend) on every model: comma-separated task "
        "names and/or task YAML files (e.g. examples/support/lm_eval/kettle_care_mc.yaml); "
        "--data becomes optional; see docs/evaluation.md",
    )
    p.add_argument(
        "--lm-eval-fewshot", type=int, metavar="N", help="lm-eval few-shot examples (default: the task's)"
    )
    p.add_argument(
        "--lm-eval-chat-template",
        action="store_true",
        help="lm-eval: render prompts with the tokenizer's chat template (default: plain text, as "
        "published lm-eval numbers are)",
    )
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda when available"
    )
    add_threads_argument(p, "score and generate with")
    p.set_defaults(func=_cmd_eval)


def _options(args):
    from ..errors import ConfigError
    from ..eval.runner import EvalOptions
    from ..eval.scorers import ScoringOptions, load_user_scorer
    from ..json_schema import read_schema_file

    schema = read_schema_file(args.json_schema, "--json-schema") if args.json_schema else None
    if args.regex:
        import re

        try:
            re.compile(args.regex)
        except re.error as exc:
            raise ConfigError(f"--regex: not a valid regular expression: {exc}") from None
    scorers = {spec.rpartition(":")[2]: load_user_scorer(spec) for spec in args.scorer}
    graders, judge = _graders(args)
    for name, value in (
        ("--max-new-tokens", args.max_new_tokens),
        ("--batch-size", args.batch_size),
        ("--max-length", args.max_length),
        ("--resamples", args.resamples),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    return EvalOptions(
        **sampling_options(args),
        batch_size=args.batch_size,
        max_length=args.max_length,
        generate=not args.no_generate,
        system=args.system,
        n_resamples=args.resamples,
        scoring=ScoringOptions(
            regex=args.regex,
            json_schema=schema,
            check_json=args.check_json,
            user_scorers=scorers,
            graders=graders,
            judge=judge,
        ),
    )


def _lm_eval_options(args):
    """``--lm-eval`` and its companions -> HarnessOptions (None without ``--lm-eval``)."""
    from ..errors import ConfigError
    from ..eval.harness import HarnessOptions, parse_tasks

    if not args.lm_eval:
        if args.lm_eval_fewshot is not None or args.lm_eval_chat_template:
            raise ConfigError("--lm-eval-fewshot / --lm-eval-chat-template need --lm-eval TASKS")
        return None
    if args.lm_eval_fewshot is not None and args.lm_eval_fewshot < 0:
        raise ConfigError(f"--lm-eval-fewshot must be >= 0, got {args.lm_eval_fewshot}")
    return HarnessOptions(
        tasks=parse_tasks(args.lm_eval),
        num_fewshot=args.lm_eval_fewshot,
        limit=args.limit,
        batch_size=args.batch_size,
        apply_chat_template=args.lm_eval_chat_template,
    )


def _graders(args):
    """``--grader`` files and the local judge of their model graders (not loaded yet); every
    problem a grader could never get past is a ConfigError here, before any model loads."""
    from ..errors import ConfigError
    from ..eval.scorers import load_eval_graders
    from ..graders import GraderError, LocalJudge, check_runnable, judge_paths

    graders = load_eval_graders(args.grader)
    judge_model = _judge_model_arg(args.judge_model)
    specs = [(f"--grader ({file})", g.spec) for file, g in zip(args.grader, graders)]
    try:
        paths = judge_paths(specs, judge_model, "--judge-model")
        judge = None
        if paths:
            from ..models.device import resolve_device

            # Eval scores its models in fp32; the judge runs the same way.
            judge = LocalJudge(paths, device=resolve_device(args.device), dtype="fp32")
        for where, spec in specs:
            check_runnable(spec, judge=judge, path=where)
    except GraderError as exc:
        raise ConfigError(f"{exc.path}: {exc.bare_message}") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return graders, judge


def _judge_model_arg(values: list[str]):
    """``--judge-model`` values -> one path (str), a ``{name: path}`` mapping, or None."""
    from ..errors import ConfigError

    if not values:
        return None
    plain = [v for v in values if "=" not in v or Path(v).exists()]
    if plain:
        if len(values) > 1:
            raise ConfigError(
                "--judge-model: give one PATH (for every model grader) or one or "
                "more NAME=PATH, not both or two paths"
            )
        return plain[0]
    mapping = {}
    for value in values:
        name, _, path = value.partition("=")
        if not name or not path or name in mapping:
            raise ConfigError(f"--judge-model {value!r}: expected NAME=PATH with a name given once")
        mapping[name] = path
    return mapping


def _cmd_eval(args) -> int:
    from ..eval.evaluate import run_eval
    from ..run import setup_logging

    setup_logging()
    report = run_eval(
        args.target,
        args.data,
        model=args.model,
        compare_with=args.compare,
        options=_options(args),
        out_dir=args.out,
        limit=args.limit,
        device=args.device,
        reward_model=args.reward_model,
        against=args.against,
        lm_eval=_lm_eval_options(args),
    )
    print(summary_table(report))
    print(f"report: {Path(report['out_dir']) / 'report.html'} (numbers in report.json)")
    return 0


def summary_table(report: dict) -> str:
    """The metric table as plain text: one row per metric, one column per model, then the
    difference of the first model from each other one with its interval and win/tie/loss."""
    from ..eval.report import fmt
    from ..eval.runner import metric_info

    models = [m["name"] for m in report["models"]]
    metrics = []
    for per in report["metrics"].values():
        metrics += [m for m in per if m not in metrics]
    header = ["metric", *models] + [
        f"{c['model']} - {c['baseline']} [95% CI]  w/t/l" for c in report["comparisons"]
    ]
    lines = [header]
    for metric in metrics:
        row = [metric_info(metric)[0]]
        row += [fmt(report["metrics"][n].get(metric, {}).get("value")) for n in models]
        for c in report["comparisons"]:
            d = c["metrics"].get(metric)
            row.append(
                "–"
                if d is None
                else f"{fmt(d['diff'])} [{fmt(d['low'])}, {fmt(d['high'])}]  {d['win']}/{d['tie']}/{d['loss']}"
            )
        lines.append(row)
    widths = [max(len(str(r[i])) for r in lines) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in lines)
