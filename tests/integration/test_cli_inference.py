"""`tunesmith generate` and `tunesmith chat` from the command line: real processes (stdin, stdout,
stderr, exit code) forked from the session's warm ``fork_trainer``."""

from __future__ import annotations

import subprocess
import uuid


def _run(server, tmp_path, args, stdin=""):
    """``tunesmith *args`` with ``stdin`` as its input: its stdout, stderr and exit code."""
    name = uuid.uuid4().hex[:8]
    out, err, src = (tmp_path / f"{name}.{kind}" for kind in ("out", "err", "in"))
    src.write_text(stdin)
    rc, stdout = server.run(list(args), out, err=err, stdin=src)
    return subprocess.CompletedProcess(args, rc, stdout, err.read_text())


def test_generate_prompts_from_flags_and_stdin(fork_trainer, tmp_path, tiny_model_dir):
    proc = _run(
        fork_trainer,
        tmp_path,
        [
            "generate",
            "--model",
            str(tiny_model_dir),
            "--prompt",
            "hello",
            "--prompt",
            "what color",
            "--max-new-tokens",
            "4",
        ],
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) >= 1
    proc = _run(
        fork_trainer,
        tmp_path,
        ["generate", "--model", str(tiny_model_dir), "--max-new-tokens", "3"],
        stdin="hi there\n",
    )
    assert proc.returncode == 0, proc.stderr


def test_chat_session_reads_turns_until_empty_line(fork_trainer, tmp_path, tiny_model_dir):
    proc = _run(
        fork_trainer,
        tmp_path,
        ["chat", "--model", str(tiny_model_dir), "--max-new-tokens", "3", "--system", "be brief"],
        stdin="hello\nand again\n\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("assistant> ") == 2


def test_generate_with_missing_model_is_a_clear_error(fork_trainer, tmp_path):
    proc = _run(fork_trainer, tmp_path, ["generate", "--model", str(tmp_path / "nothing"), "--prompt", "x"])
    assert proc.returncode == 2 and "model not found" in proc.stderr


def test_data_commands_are_wired(fork_trainer, tmp_path):
    import json

    src = tmp_path / "in.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"mail me at user{i}@example.com"},
                {"role": "assistant", "content": f"noted, reply {i}"},
            ]
        }
        for i in range(12)
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = _run(
        fork_trainer,
        tmp_path,
        [
            "data",
            "scrub",
            str(src),
            "--out",
            str(tmp_path / "clean.jsonl"),
            "--report",
            str(tmp_path / "r.json"),
        ],
    )
    assert proc.returncode == 0, proc.stderr
    assert "EMAIL 12" in proc.stdout and "@example.com" not in (tmp_path / "clean.jsonl").read_text()
    proc = _run(
        fork_trainer,
        tmp_path,
        ["data", "convert", str(src), "--to", "alpaca", "--out", str(tmp_path / "a.jsonl")],
    )
    assert proc.returncode == 0 and "converted 12 of 12" in proc.stdout
    proc = _run(fork_trainer, tmp_path, ["data", "check", str(src)])
    assert proc.returncode == 0 and "usable" in proc.stdout
    proc = _run(fork_trainer, tmp_path, ["data", "scrub", str(src), "--out", str(src)])
    assert proc.returncode == 2 and "error:" in proc.stderr
