"""`tunesmith generate` and `tunesmith chat` from the command line."""

from __future__ import annotations

import subprocess
import sys


def _run(args, stdin=""):
    return subprocess.run(
        [sys.executable, "-m", "tunesmith", *args], input=stdin, capture_output=True, text=True, timeout=300
    )


def test_generate_prompts_from_flags_and_stdin(tiny_model_dir):
    proc = _run(
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
        ]
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) >= 1
    proc = _run(["generate", "--model", str(tiny_model_dir), "--max-new-tokens", "3"], stdin="hi there\n")
    assert proc.returncode == 0, proc.stderr


def test_chat_session_reads_turns_until_empty_line(tiny_model_dir):
    proc = _run(
        ["chat", "--model", str(tiny_model_dir), "--max-new-tokens", "3", "--system", "be brief"],
        stdin="hello\nand again\n\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("assistant> ") == 2


def test_generate_with_missing_model_is_a_clear_error(tmp_path):
    proc = _run(["generate", "--model", str(tmp_path / "nothing"), "--prompt", "x"])
    assert proc.returncode == 2 and "model not found" in proc.stderr


def test_data_commands_are_wired(tmp_path):
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
        [
            "data",
            "scrub",
            str(src),
            "--out",
            str(tmp_path / "clean.jsonl"),
            "--report",
            str(tmp_path / "r.json"),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    assert "EMAIL 12" in proc.stdout and "@example.com" not in (tmp_path / "clean.jsonl").read_text()
    proc = _run(["data", "convert", str(src), "--to", "alpaca", "--out", str(tmp_path / "a.jsonl")])
    assert proc.returncode == 0 and "converted 12 of 12" in proc.stdout
    proc = _run(["data", "check", str(src)])
    assert proc.returncode == 0 and "usable" in proc.stdout
    proc = _run(["data", "scrub", str(src), "--out", str(src)])
    assert proc.returncode == 2 and "error:" in proc.stderr
