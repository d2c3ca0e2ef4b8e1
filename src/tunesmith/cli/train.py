"""``tunesmith train`` (one process, or N under torchrun) and ``tunesmith config`` (every key's default)."""

from __future__ import annotations

import sys
import time

from ..errors import TunesmithError
from .compute import add_threads_argument
from .options import add_config_arguments

# Process start, for the run's start-up timing (``train`` reports time to first step from here).
_START = time.time()


def _cmd_train(args) -> int:
    import os

    if args.nproc is not None and args.nproc < 1:
        raise TunesmithError(f"--nproc must be >= 1, got {args.nproc}")
    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_train(args)
    from ..run import train

    resume = True if args.resume else False if args.no_resume else "auto"
    overrides = [*args.set, *([f"train.profile_steps={args.profile}"] if args.profile else [])]
    overrides += [f"train.threads={args.threads}"] if args.threads else []
    result = train(args.config, overrides, resume=resume, process_start=_START)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # rank 0 reports for the job
    summary = f"trained {result.steps} steps"
    if result.final_loss is not None:
        summary += f": final loss {result.final_loss:.4f}"
    if result.eval_loss is not None:
        summary += f", eval loss {result.eval_loss:.4f}"
    if result.stopped_early_at is not None:
        summary += " (stopped early)"
    if result.final_from_step is not None:
        summary += f"; final/ holds the best evaluation's weights, step {result.final_from_step}"
        summary += f" (eval loss {result.best_eval_loss:.4f})"
    print(summary)
    return 0


def _launch_train(args) -> int:
    """``train --nproc N``: the same command on N local processes under torchrun."""
    from ..config import load_config
    from ..engine.distributed import launch_local
    from ..methods import validate

    cfg = load_config(args.config, args.set)
    validate(cfg)  # config mistakes are reported once, before any process starts
    if cfg.train.parallel == "none":
        raise TunesmithError(
            f"--nproc {args.nproc}: set train.parallel to ddp or fsdp in {args.config} "
            "(or add --set train.parallel=ddp)"
        )
    forwarded = ["train", args.config, *[f"--set={item}" for item in args.set]]
    forwarded += [f"--threads={args.threads}"] if args.threads else []
    forwarded += ["--resume"] if args.resume else ["--no-resume"] if args.no_resume else []
    code = launch_local(args.nproc, forwarded)
    if code != 0:
        print(
            f"error: distributed training stopped (torchrun exit status {code}); the failing "
            "rank's error is above. Checkpoints written so far are kept: rerun to resume.",
            file=sys.stderr,
        )
    return code


def _cmd_config(args) -> int:
    from ..config.describe import commented_config

    print(commented_config(), end="")
    return 0


def add_train_commands(sub) -> None:
    p = sub.add_parser("train", help="train from a YAML config")
    add_config_arguments(p, example="train.lr=1e-4")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="require resuming from the newest checkpoint")
    g.add_argument("--no-resume", action="store_true", help="start from scratch even if checkpoints exist")
    p.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train on N processes of this machine (torchrun; one per GPU on CUDA); "
        "needs train.parallel ddp or fsdp. See docs/distributed.md",
    )
    p.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=3,
        metavar="N",
        help="profile steps 2..1+N (default 3): print where a step's time goes and write "
        "OUTPUT_DIR/profile.json (train.profile_steps)",
    )
    add_threads_argument(p, "train with, per process (train.threads)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "config", help="print the default config: every key, its default and what it means (YAML comments)"
    )
    p.set_defaults(func=_cmd_config)
