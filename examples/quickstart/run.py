#!/usr/bin/env python
"""The quickstart: fine-tune the shipped base model on the support dataset, then compare.

1. ``tunesmith.train(examples/quickstart/lora.yaml)`` — LoRA on ``models/tunesmith-base``.
2. Base vs tuned on the held-out questions (phrasings never seen in training): greedy answers
   from the same weights with the adapter off and on; a question counts as answered when the
   reply contains every keyword of its fact (``keywords`` field of ``heldout.jsonl``).
3. A before/after table, a few answers side by side, and ``runs/quickstart/quickstart.json``.

    python examples/quickstart/run.py [--set train.epochs=1 ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_heldout(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for row in rows:
        row["prompt_messages"] = [m for m in row["messages"] if m["role"] != "assistant"]
    return rows


def keyword_hit(reply: str, keywords: list[str]) -> bool:
    text = reply.lower()
    return all(k.lower() in text for k in keywords)


def answer_all(model, tok, rows, batch_size: int = 16) -> list[str]:
    from tunesmith.models.generate import generate

    out = []
    for s in range(0, len(rows), batch_size):
        out += generate(model, tok, [r["prompt_messages"] for r in rows[s:s + batch_size]], max_new_tokens=64)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description="tunesmith quickstart")
    ap.add_argument("--config", default=str(ROOT / "examples" / "quickstart" / "lora.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    import os

    os.chdir(ROOT)  # the config's paths are relative to the repository root
    import tunesmith
    from tunesmith.config import load_config
    from tunesmith.models.generate import load_for_inference

    t0 = time.time()
    cfg = load_config(args.config, args.set)
    result = tunesmith.train(cfg, resume=False)
    train_s = time.time() - t0

    rows = load_heldout(Path(cfg.data.eval))
    model, tok = load_for_inference(cfg.output_dir)  # base + adapter, one copy of the weights
    tuned = answer_all(model, tok, rows)
    with model.disable_adapter():
        base = answer_all(model, tok, rows)
    base_hits = [keyword_hit(a, r["keywords"]) for a, r in zip(base, rows)]
    tuned_hits = [keyword_hit(a, r["keywords"]) for a, r in zip(tuned, rows)]
    first_eval = next(h["eval_loss"] for h in result.history if "eval_loss" in h)

    n = len(rows)
    print("\n=== tunesmith quickstart: base vs tuned on", n, "held-out questions ===")
    print(f"{'metric':<34}{'base':>10}{'tuned':>10}")
    print(f"{'facts answered (all keywords)':<34}{sum(base_hits):>7}/{n:<2}{sum(tuned_hits):>7}/{n:<2}")
    print(f"{'held-out answer loss (nats/token)':<34}{first_eval:>10.3f}{result.eval_loss:>10.3f}")
    print(f"training: {result.steps} steps in {train_s:.0f} s (incl. loading and evaluation)\n")
    shown = [i for i in range(n) if tuned_hits[i] and not base_hits[i]][:3] or list(range(min(3, n)))
    for i in shown:
        print("Q:", rows[i]["prompt_messages"][-1]["content"])
        print("  base :", base[i][:160])
        print("  tuned:", tuned[i][:160])
    report = {"heldout": n, "base_correct": sum(base_hits), "tuned_correct": sum(tuned_hits),
              "base_eval_loss": first_eval, "tuned_eval_loss": result.eval_loss, "steps": result.steps,
              "train_seconds": round(train_s, 1),
              "answers": [{"question": r["prompt_messages"][-1]["content"], "keywords": r["keywords"],
                           "base": b, "tuned": t} for r, b, t in zip(rows, base, tuned)]}
    out = Path(cfg.output_dir) / "quickstart.json"
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(f"\nfull report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
