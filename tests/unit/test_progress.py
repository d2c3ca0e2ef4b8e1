"""Progress of long steps (tunesmith.progress) and ``--threads`` on every computing command."""

from __future__ import annotations

import logging
import time

import pytest
import torch

from tunesmith import threads
from tunesmith.cli import build_parser
from tunesmith.progress import TaskProgress, use_bar


def test_lines_report_a_long_single_call_with_its_stage_and_the_count(caplog):
    caplog.set_level(logging.INFO, logger="tunesmith")
    with TaskProgress("GGUF export m.gguf", mode="lines", every_s=0.05) as p:
        p.stage("converting tensors", 10)
        p.advance(3)
        time.sleep(0.3)  # one opaque call: the timer still reports
        p.stage("quantising to q4_K_M with llama.cpp")
        time.sleep(0.3)
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("GGUF export m.gguf: converting tensors, 3/10") and "left" in m for m in lines)
    assert any(m.startswith("GGUF export m.gguf: quantising to q4_K_M with llama.cpp") for m in lines)
    assert lines[-1].startswith("GGUF export m.gguf: done in 0:00:0")


def test_a_quick_task_prints_nothing_and_none_mode_is_silent(caplog):
    caplog.set_level(logging.INFO, logger="tunesmith")
    with TaskProgress("quick", 4, "prompts", mode="lines", every_s=5) as p:
        p.advance(4)
    with TaskProgress("silent", mode="none", every_s=0.01) as p:
        time.sleep(0.05)
    assert caplog.records == []


def test_without_logging_set_up_lines_go_to_stderr(capsys, monkeypatch):
    log = logging.getLogger("tunesmith")
    monkeypatch.setattr(log, "handlers", [])
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    with TaskProgress("base: generating replies", 8, "prompts", mode="lines", every_s=0.05) as p:
        p.advance(2)
        time.sleep(0.2)
    err = capsys.readouterr().err
    assert "base: generating replies: 2/8 prompts" in err and "done in" in err


def test_bar_mode_draws_with_rich():
    pytest.importorskip("rich")
    assert use_bar("bar") and not use_bar("lines") and not use_bar("none")
    with TaskProgress("eval", 3, "prompts", mode="bar") as p:
        p.stage("generating", 3)
        p.advance(3)
    assert p.done == 3


def test_generation_and_scoring_report_their_batches(tiny_model_dir, tiny_tokenizer):
    from tunesmith.data.example import Example
    from tunesmith.data.render import Renderer
    from tunesmith.eval.likelihood import example_losses
    from tunesmith.models.generate import generate_ids, load_for_inference

    model, tok = load_for_inference(str(tiny_model_dir))
    prompts = [tok.encode(t, add_special_tokens=False) for t in ["a b", "c", "d e f", "g", "h"]]
    seen = []
    generate_ids(model, tok, prompts, max_new_tokens=2, batch_size=2, progress=seen.append)
    assert seen == [2, 2, 1]
    renderer = Renderer(tok, max_length=64)
    chats = [
        Example(
            "chat", f"t:{k}", [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo " * k}]
        )
        for k in (1, 2, 3)
    ]
    rendered = renderer.render_many(chats)
    seen = []
    example_losses(model, rendered, max_tokens_per_pass=1, progress=seen.append)
    assert sum(seen) == 3


COMPUTING = [
    ["eval", "runs/x"],
    ["generate", "--model", "m"],
    ["chat", "--model", "m"],
    ["distill", "generate", "--teacher", "t", "--prompts", "p.jsonl", "--out", "o.jsonl"],
    ["distill", "eval", "--student", "s", "--teacher", "t", "--data", "d.jsonl"],
    ["export", "runs/x", "--out", "o"],
    ["merge", "runs/x", "--out", "o"],
    ["serve", "--model", "m"],
    ["estimate", "c.yaml"],
    ["import", "m.gguf"],
    ["reward", "score", "m", "f.jsonl"],
    ["train", "c.yaml"],
]


@pytest.mark.parametrize("argv", COMPUTING, ids=lambda a: " ".join(a[:2]))
def test_threads_on_every_computing_command_caps_torch_and_children(argv, monkeypatch):
    for name in threads.THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    try:
        args = build_parser().parse_args([*argv, "--threads", "1"])
        assert args.threads == 1
        assert torch.get_num_threads() == 1
        assert all(threads.thread_env(1)[name] == "1" for name in threads.THREAD_ENV)
        import os

        assert os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)


def test_threads_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "runs/x", "--threads", "0"])
    assert "--threads: must be >= 1, got 0" in capsys.readouterr().err
