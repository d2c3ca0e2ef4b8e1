"""Sequence-level distillation (Kim & Rush 2016): the teacher answers prompts, the student is then
trained on those answers with plain ``method: sft`` — ``tunesmith distill generate``.

Needs no shared vocabulary (only text passes between the models), so it is the way to distil
across model families. The prompts file may hold prompt-only rows (``{"prompt": "..."}`` or a
message list), or any chat / SFT format, whose trailing assistant turn(s) are dropped and
replaced by the teacher's answer. The output is OpenAI chat JSONL; the sampling settings, the
teacher and the input's checksum are recorded beside it in ``OUT.generation.json``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from ..data.formats import (
    ALPACA,
    OPENAI_CHAT,
    PROMPT_COMPLETION,
    PROMPT_ONLY,
    SHAREGPT,
    Where,
    check_messages,
    iter_format_rows,
    to_example,
)
from ..errors import DataError
from ..hashing import sha256_file
from ..progress import TaskProgress
from .distill_teacher import describe, fingerprint, load_teacher, resolve_teacher, teacher_tokenizer_dir

log = logging.getLogger("tunesmith")

_CHAT_LIKE = (SHAREGPT, ALPACA, PROMPT_COMPLETION)


def read_prompts(path: str) -> list[list[dict]]:
    """The prompt of every row of ``path`` as a message list ending in a non-assistant turn."""
    prompts = []
    for number, file_format, row in iter_format_rows(path):
        at = Where(str(path), number)
        if file_format == PROMPT_ONLY:
            p = row["prompt"]
            messages = (
                [{"role": "user", "content": p}] if isinstance(p, str) else check_messages(p, "prompt", at)
            )
        elif file_format == OPENAI_CHAT:  # may end in a user turn (no answer yet)
            messages = [
                {k: v for k, v in m.items() if k != "weight"}
                for m in check_messages(row["messages"], "messages", at)
            ]
            while messages and messages[-1]["role"] == "assistant":
                messages.pop()
        elif file_format in _CHAT_LIKE:
            ex = to_example(row, file_format, path, number)
            if ex.kind == "completion":
                messages = [{"role": "user", "content": ex.prompt}]
            else:
                messages = [{k: v for k, v in m.items() if k != "weight"} for m in ex.messages]
                while messages and messages[-1]["role"] == "assistant":
                    messages.pop()
        else:
            raise at.error(
                f"rows of this shape ({file_format}) hold no single prompt to answer; "
                'use prompt-only rows ({"prompt": ...}) or chat rows'
            )
        if not messages or messages[-1]["role"] == "assistant":
            raise at.error("the row has no prompt left once its assistant answer is removed", "messages")
        prompts.append(messages)
    if not prompts:
        raise DataError(f"{path}: no prompts")
    return prompts


def generate_dataset(
    teacher: str,
    prompts_path: str,
    out: str,
    *,
    adapter: str | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    samples: int = 1,
    system: str | None = None,
    batch_size: int = 16,
    device: str | None = None,
) -> dict:
    """Write the teacher's answers to every prompt of ``prompts_path`` as chat JSONL at ``out``.

    ``samples`` answers per prompt (use temperature > 0 for them to differ; sample ``s`` uses
    seed ``seed + s``). Empty answers are skipped and counted. Returns the recorded metadata.
    """
    from ..models.generate import generate
    from ..models.load import load_tokenizer

    out_path = Path(out)
    if out_path.resolve() == Path(prompts_path).resolve():
        raise DataError(f"--out {out} would overwrite the prompts file")
    prompts = read_prompts(prompts_path)
    base, adapter = resolve_teacher(teacher, adapter)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = load_tokenizer(teacher_tokenizer_dir(base, adapter))
    model = load_teacher(base, adapter, dev)
    t0 = time.perf_counter()
    written = empty = 0
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    with (
        open(tmp, "w", encoding="utf-8") as f,
        TaskProgress("distill generate: teacher answering", len(prompts) * samples, "prompts") as bar,
    ):
        for s in range(samples):
            for start in range(0, len(prompts), batch_size):
                chunk = prompts[start : start + batch_size]
                replies = generate(
                    model,
                    tokenizer,
                    chunk,
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    top_p=top_p,
                    seed=seed + s * 100003 + start,
                    system=system,
                )
                for messages, reply in zip(chunk, replies):
                    if not reply:
                        empty += 1
                        continue
                    if system and not any(m["role"] == "system" for m in messages):
                        messages = [{"role": "system", "content": system}] + messages
                    f.write(
                        json.dumps(
                            {"messages": messages + [{"role": "assistant", "content": reply}]},
                            ensure_ascii=False,
                        )
                        + "\n"
                    )
                    written += 1
                bar.advance(len(chunk))
    tmp.replace(out_path)
    meta = {
        "teacher": base,
        "teacher_adapter": adapter,
        "teacher_fingerprint": fingerprint(base, adapter),
        "prompts": str(prompts_path),
        "prompts_sha256": sha256_file(prompts_path),
        "sampling": {
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
            "samples_per_prompt": samples,
            "system": system,
        },
        "prompts_count": len(prompts),
        "written": written,
        "skipped_empty": empty,
        "seconds": round(time.perf_counter() - t0, 2),
        "device": str(dev),
    }
    Path(f"{out}.generation.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    log.info(
        "distill generate: %s answered %d prompts -> %d rows in %s",
        describe(base, adapter),
        len(prompts),
        written,
        out,
    )
    return meta
