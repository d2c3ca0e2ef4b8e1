"""``tunesmith reward score``: score a JSONL file with a trained reward model.

Each input row is written back with its reward(s) added:

- a conversation (``{"messages": [...]}``) or prompt/completion row -> ``"reward"``;
- a preference pair (prompt/chosen/rejected or OpenAI preference) -> ``"reward_chosen"`` and
  ``"reward_rejected"``; the summary then reports the pairwise accuracy on the file.

The reward of a conversation is the model's scalar at its last token, tokenised exactly as
``method: reward`` trained on it (:mod:`tunesmith.models.reward_model`).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ..errors import DataError
from .compute import add_threads_argument


def add_reward_commands(subparsers: Any) -> None:
    reward = subparsers.add_parser("reward", help="use a trained reward model")
    sub = reward.add_subparsers(dest="reward_command", required=True)
    p = sub.add_parser("score", help="add reward scores to every row of a JSONL file")
    p.add_argument("model", help="reward model folder (the final/ of a `method: reward` run)")
    p.add_argument("file", help="conversations, prompt/completion rows or preference pairs")
    p.add_argument("--out", help="write scored rows here (default: stdout)")
    p.add_argument("--base", help="base model folder of an adapter (default: the recorded one)")
    p.add_argument("--batch-size", type=int, default=8, help="rows scored together")
    p.add_argument("--max-length", type=int, help="keep the last N tokens of longer conversations")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    add_threads_argument(p, "score with")
    p.set_defaults(func=_cmd_score)


def _conversations(path: str) -> tuple[list[dict], list[list[list[dict]]]]:
    """Rows of ``path`` and, per row, the conversations to score (1, or 2 for a pair)."""
    from ..data.formats import (
        OPENAI_CHAT,
        OPENAI_PREFERENCE,
        PREFERENCE_PAIRS,
        PROMPT_COMPLETION,
        Where,
        check_messages,
        iter_format_rows,
    )
    from ..data.preference import pair_from_row

    rows, convs = [], []
    for number, fmt, row in iter_format_rows(path):
        at = Where(str(path), number)
        if fmt in (OPENAI_PREFERENCE, PREFERENCE_PAIRS):
            pair = pair_from_row(row, fmt, at)
            if isinstance(pair.prompt, str):
                pair = pair_from_row({**row, "prompt": [{"role": "user", "content": row["prompt"]}]}, fmt, at)
            convs.append([pair.prompt + pair.chosen, pair.prompt + pair.rejected])
        elif fmt == OPENAI_CHAT:
            convs.append([check_messages(row["messages"], "messages", at)])
        elif fmt == PROMPT_COMPLETION:
            prompt, completion = row["prompt"], row["completion"]
            prompt = (
                [{"role": "user", "content": prompt}]
                if isinstance(prompt, str)
                else check_messages(prompt, "prompt", at)
            )
            completion = (
                [{"role": "assistant", "content": completion}]
                if isinstance(completion, str)
                else check_messages(completion, "completion", at)
            )
            convs.append([prompt + completion])
        else:
            raise at.error(
                'reward score reads conversations ({"messages": [...]}), prompt/'
                "completion rows or preference pairs; this file's first row is another format"
            )
        rows.append(row)
    return rows, convs


def _cmd_score(args) -> int:
    from ..models.device import resolve_device
    from ..models.reward_model import load_reward_model, score

    rows, convs = _conversations(args.file)
    if not rows:
        raise DataError("no rows to score", path=args.file)
    model, tok = load_reward_model(args.model, device=resolve_device(args.device), base=args.base)
    flat = [c for row_convs in convs for c in row_convs]
    rewards = iter(score(model, tok, flat, batch_size=args.batch_size, max_length=args.max_length))
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    pairs = correct = 0
    all_rewards = []
    try:
        for row, row_convs in zip(rows, convs):
            if len(row_convs) == 2:
                c, r = next(rewards), next(rewards)
                row = {**row, "reward_chosen": c, "reward_rejected": r}
                pairs += 1
                correct += (c > r) + 0.5 * (c == r)
                all_rewards += [c, r]
            else:
                row = {**row, "reward": next(rewards)}
                all_rewards.append(row["reward"])
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    finally:
        if args.out:
            out.close()
    summary = f"scored {len(rows)} rows: mean reward {sum(all_rewards) / len(all_rewards):.4f}"
    if pairs:
        summary += f", pairwise accuracy {correct / pairs:.3f} over {pairs} pairs"
    print(summary + (f"; wrote {args.out}" if args.out else ""), file=sys.stderr)
    return 0
