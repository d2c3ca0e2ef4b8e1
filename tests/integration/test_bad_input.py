"""User mistakes get one clear line naming the place (file, line, field, key), exit code 2.

Each ``tunesmith train`` is a real process (what the user's terminal shows: its stderr and exit
code) forked from the session's warm ``fork_trainer`` rather than a fresh interpreter."""

from __future__ import annotations

import pytest
import yaml


def _run(server, tmp_path, cfg: dict, *extra):
    """Run ``tunesmith train`` on ``cfg``: (exit code, its stderr)."""
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    n = len(list(tmp_path.glob("stderr-*.txt")))  # one file per run, to read back after a failure
    out, err = tmp_path / f"stdout-{n}.txt", tmp_path / f"stderr-{n}.txt"
    rc, _ = server.run(["train", str(path), *extra], out, err=err)
    return rc, err.read_text()


def _base(model, train, out):
    return {
        "model": str(model),
        "data": {"train": str(train), "eval_fraction": 0},
        "train": {"max_steps": 1, "save_every": 0, "eval_every": 0},
        "output_dir": str(out),
    }


@pytest.mark.parametrize(
    "case,content,expected",
    [
        (
            "malformed",
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n{"messages": [\n',
            r"train.jsonl, line 2.*invalid JSON",
        ),
        (
            "missing-field",
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
            '{"messages": [{"role": "user", "content": "hi"}, {"content": "yo"}]}\n',
            r"train.jsonl, line 2, field 'messages\[1\]\.role'",
        ),
        ("empty", "", r"train.jsonl.*empty"),
    ],
)
def test_bad_data_names_file_line_and_field(fork_trainer, tmp_path, tiny_model_dir, case, content, expected):
    import re

    train = tmp_path / "train.jsonl"
    train.write_text(content)
    code, err = _run(fork_trainer, tmp_path, _base(tiny_model_dir, train, tmp_path / "out"))
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and re.search(expected, last), err
    assert "Traceback" not in err


def test_unknown_config_key_suggests(fork_trainer, tmp_path, tiny_model_dir, color_data):
    cfg = _base(tiny_model_dir, color_data[0], tmp_path / "out")
    cfg["train"]["learning_rate"] = 1e-4
    code, err = _run(fork_trainer, tmp_path, cfg)
    assert code == 2 and "unknown key 'train.learning_rate'" in err and "Traceback" not in err
    code, err = _run(
        fork_trainer, tmp_path, _base(tiny_model_dir, color_data[0], tmp_path / "out"), "--set", "adaptr.r=4"
    )
    assert code == 2 and "Did you mean 'adapter'?" in err


def test_missing_model_directory(fork_trainer, tmp_path, color_data):
    code, err = _run(
        fork_trainer, tmp_path, _base(tmp_path / "no-such-model", color_data[0], tmp_path / "out")
    )
    assert code == 2 and "model not found" in err and "no-such-model" in err


def test_missing_data_file(fork_trainer, tmp_path, tiny_model_dir):
    code, err = _run(fork_trainer, tmp_path, _base(tiny_model_dir, tmp_path / "nope.jsonl", tmp_path / "out"))
    assert code == 2 and "nope.jsonl" in err and "Traceback" not in err


def test_corrupt_checkpoint_is_a_clear_error(fork_trainer, tmp_path, tiny_model_dir, color_data):
    """A damaged checkpoint is skipped for an older one (tests/invariants/test_checkpoint_integrity.py);
    when every one is damaged, the run stops with one error line naming the bad files."""
    cfg = _base(tiny_model_dir, color_data[0], tmp_path / "out")
    cfg["train"].update(max_steps=2, save_every=1)
    assert _run(fork_trainer, tmp_path, cfg)[0] == 0
    for step in (1, 2):
        (tmp_path / "out" / "checkpoints" / f"step-{step:06d}" / "trainable.safetensors").write_bytes(
            b"garbage"
        )
    cfg["train"]["max_steps"] = 3
    code, err = _run(fork_trainer, tmp_path, cfg)
    assert code == 2 and "Traceback" not in err
    assert "step-000002: trainable.safetensors: 7 bytes" in err and "error: no usable checkpoint" in err


def test_incomplete_checkpoint_is_skipped(fork_trainer, tmp_path, tiny_model_dir, color_data):
    cfg = _base(tiny_model_dir, color_data[0], tmp_path / "out")
    cfg["train"].update(max_steps=2, save_every=1, keep_last=5)
    assert _run(fork_trainer, tmp_path, cfg)[0] == 0
    (tmp_path / "out" / "checkpoints" / "step-000002" / "COMMITTED").unlink()
    cfg["train"]["max_steps"] = 3
    code, err = _run(fork_trainer, tmp_path, cfg)
    assert code == 0, err
    assert "skipping incomplete checkpoint" in err and "resumed from" in err and "step 1" in err


def test_changed_batching_refuses_to_resume(fork_trainer, tmp_path, tiny_model_dir, color_data):
    cfg = _base(tiny_model_dir, color_data[0], tmp_path / "out")
    cfg["train"].update(max_steps=2, save_every=1)
    assert _run(fork_trainer, tmp_path, cfg)[0] == 0
    cfg["train"].update(max_steps=3, batch_size=2)
    code, err = _run(fork_trainer, tmp_path, cfg)
    assert code == 2 and "'batch_size' was 8" in err


def _record(out):
    """The bytes of a run folder's record and result, to compare before and after a rerun."""
    files = [
        "config.resolved.yaml",
        "run.json",
        "metrics.jsonl",
        *(f"final/{p.name}" for p in (out / "final").iterdir()),
    ]
    return {name: (out / name).read_bytes() for name in files}


def test_rerunning_a_finished_run_does_no_more_steps(fork_trainer, tmp_path, tiny_model_dir, color_data):
    cfg = _base(tiny_model_dir, color_data[0], tmp_path / "out")
    cfg["train"].update(max_steps=2)
    assert _run(fork_trainer, tmp_path, cfg)[0] == 0
    record = _record(tmp_path / "out")
    cfg["train"]["threads"] = 1  # how it runs, not what it learns: still the same run
    code, err = _run(fork_trainer, tmp_path, cfg)
    assert code == 0, err
    assert "already complete at step 2" in err
    assert _record(tmp_path / "out") == record  # nothing of the record or result rewritten
    # a lost result is not "complete": the run resumes from its last checkpoint and writes it again
    import shutil

    shutil.rmtree(tmp_path / "out" / "final")
    code, err = _run(fork_trainer, tmp_path, cfg)
    assert code == 0, err
    assert (tmp_path / "out" / "final" / "adapter_model.safetensors").is_file()


def test_changed_config_on_a_complete_run_is_refused(fork_trainer, tmp_path, tiny_model_dir, color_data):
    """Issue 20: a rerun with another lr said "already complete" but rewrote config.resolved.yaml,
    so the exported card stated an lr the model never trained with."""
    cfg = _base(tiny_model_dir, color_data[0], tmp_path / "out")
    cfg["train"].update(max_steps=2, lr=1e-3)
    assert _run(fork_trainer, tmp_path, cfg)[0] == 0
    record = _record(tmp_path / "out")
    cfg["train"]["lr"] = 5e-3
    cfg["adapter"] = {"r": 8}
    code, err = _run(fork_trainer, tmp_path, cfg)
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert (
        "holds a complete run" in last and "train.lr: 0.001 -> 0.005" in last and "adapter.r: 16 -> 8" in last
    )
    assert f"--set output_dir={tmp_path / 'out'}-2" in last and "--no-resume" in last
    assert _record(tmp_path / "out") == record
    resolved = yaml.safe_load((tmp_path / "out" / "config.resolved.yaml").read_text())
    assert resolved["train"]["lr"] == 1e-3  # what the card will read is what ran
    # --no-resume retrains the folder from scratch: that run trains it, so it writes the record
    code, err = _run(fork_trainer, tmp_path, cfg, "--no-resume")
    assert code == 0, err
    assert yaml.safe_load((tmp_path / "out" / "config.resolved.yaml").read_text())["train"]["lr"] == 5e-3
