"""Build the preference examples from the support chats (examples/support): deterministic.

The preferred answer is the desk's reply in house style (it signs off "Happy brewing! - Kettle
Care"); the other answer is the same reply without the sign-off. Writes train.jsonl /
heldout.jsonl (prompt/chosen/rejected message lists) and kto.jsonl (prompt/completion/label).

    python examples/preference/make_pairs.py
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUPPORT = HERE.parent / "support"
SIGN_OFF = " Happy brewing! - Kettle Care"


def pairs(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"]
        k = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
        answer = messages[k]["content"]
        if not answer.endswith(SIGN_OFF):
            continue
        out.append(
            {
                "prompt": messages[:k],
                "chosen": [{"role": "assistant", "content": answer}],
                "rejected": [{"role": "assistant", "content": answer[: -len(SIGN_OFF)]}],
            }
        )
    return out


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    train, heldout = pairs(SUPPORT / "train.jsonl")[:400], pairs(SUPPORT / "heldout.jsonl")[:60]
    write(HERE / "train.jsonl", train)
    write(HERE / "heldout.jsonl", heldout)
    rng = random.Random(0)
    kto = []
    for row in train:
        good = rng.random() < 0.5
        kto.append(
            {"prompt": row["prompt"], "completion": row["chosen" if good else "rejected"], "label": good}
        )
    write(HERE / "kto.jsonl", kto)
    print(f"{len(train)} train pairs, {len(heldout)} held-out pairs, {len(kto)} KTO rows")
