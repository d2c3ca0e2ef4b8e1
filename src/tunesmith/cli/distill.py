"""``tunesmith distill generate | eval``: sequence-level distillation data and teacher agreement.

:func:`add_distill_commands` adds the ``distill`` command group to the main parser. Training
itself is ``tunesmith train`` with ``method: distill`` (see docs/distillation.md).
"""

from __future__ import annotations

import json
from typing import Any

from .compute import add_threads_argument
from .options import add_sampling_arguments, sampling_options


def add_distill_commands(subparsers: Any) -> None:
    distill = subparsers.add_parser("distill", help="sequence-level distillation data; student vs teacher")
    sub = distill.add_subparsers(dest="distill_command", required=True)

    p = sub.add_parser("generate", help="the teacher answers prompts -> a chat SFT dataset")
    p.add_argument("--teacher", required=True, help="teacher model folder, adapter folder or run directory")
    p.add_argument("--adapter", help="LoRA adapter applied over --teacher")
    p.add_argument("--prompts", required=True, help="JSONL of prompt-only or chat rows")
    p.add_argument(
        "--out", required=True, help="output chat JSONL (OUT.generation.json records the settings)"
    )
    add_sampling_arguments(p, max_new_tokens=256)
    p.add_argument("--samples", type=int, default=1, help="answers per prompt (use --temperature > 0)")
    p.add_argument("--system", help="system prompt added where a prompt has none")
    p.add_argument("--batch-size", type=int, default=16, help="prompts the teacher answers together")
    p.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda when available)")
    add_threads_argument(p, "generate with")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("eval", help="held-out KL to the teacher, top-1 agreement, CE of a student")
    p.add_argument("--student", required=True, help="student model folder, adapter folder or run directory")
    p.add_argument("--student-adapter", help="LoRA adapter applied over --student")
    p.add_argument("--teacher", required=True, help="teacher model folder, adapter folder or run directory")
    p.add_argument("--teacher-adapter", help="LoRA adapter applied over --teacher")
    p.add_argument("--data", required=True, help="chat / SFT data file whose assistant tokens are scored")
    p.add_argument("--max-length", type=int, default=1024, help="tokens per conversation (longer: truncated)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_threads_argument(p, "score with")
    p.set_defaults(func=_cmd_eval)


def _cmd_generate(args) -> int:
    from ..methods.distill_generate import generate_dataset

    if args.samples < 1 or args.max_new_tokens < 1 or args.batch_size < 1:
        from ..errors import ConfigError

        raise ConfigError("--samples, --max-new-tokens and --batch-size must be >= 1")
    meta = generate_dataset(
        args.teacher,
        args.prompts,
        args.out,
        adapter=args.adapter,
        samples=args.samples,
        system=args.system,
        batch_size=args.batch_size,
        device=args.device,
        **sampling_options(args),
    )
    print(
        f"wrote {meta['written']} conversations to {args.out} ({meta['skipped_empty']} empty answers "
        f"skipped); settings in {args.out}.generation.json"
    )
    return 0


def _cmd_eval(args) -> int:
    from ..methods.distill_eval import compare_paths

    report = compare_paths(
        args.student,
        args.teacher,
        args.data,
        student_adapter=args.student_adapter,
        teacher_adapter=args.teacher_adapter,
        max_length=args.max_length,
        device=args.device,
    )
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(
            f"{report['positions']} positions in {report['examples']} examples of {args.data}: "
            f"KL(teacher||student) {report['kl']:.4f} nats/token, top-1 agreement "
            f"{report['agreement']:.1%}, student CE {report['ce']:.4f}"
        )
    return 0
