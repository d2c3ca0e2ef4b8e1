"""Write kettle_care_mc.jsonl, the lm-evaluation-harness task data of kettle_care_mc.yaml, from
the support held-out set: each held-out question with four answers to choose from — the
fact's canonical answer (facts.json) and those of three other facts, drawn and shuffled with a
fixed seed, so the file is the same on every run.

    python examples/support/lm_eval/make_mc.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    facts = {
        f["id"]: f["answer"] for f in json.loads((HERE.parent / "facts.json").read_text(encoding="utf-8"))
    }
    rows = [
        json.loads(line) for line in (HERE.parent / "heldout.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    rng = random.Random(0)
    with open(HERE / "kettle_care_mc.jsonl", "w", encoding="utf-8") as out:
        for row in rows:
            question = next(m["content"] for m in row["messages"] if m["role"] == "user")
            others = rng.sample(sorted(k for k in facts if k != row["fact_id"]), 3)
            choices = [facts[row["fact_id"]], *(facts[k] for k in others)]
            rng.shuffle(choices)
            record = {
                "question": question,
                "choices": choices,
                "answer": choices.index(facts[row["fact_id"]]),
                "fact_id": row["fact_id"],
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
