"""A damaged committed checkpoint does not end the run, and a kill anywhere resumes exactly.

Regression (the issue): kill a run after its second checkpoint, damage the newest one after its
commit (``optim.pt`` cut in half, ``trainable.safetensors`` cut short, ``optim.pt`` deleted, a
flipped byte) and ``train --resume``: a warning names the bad file, the run resumes from the
older checkpoint, and every per-step metric equals the uninterrupted run's (CPU fp32). When no
checkpoint is usable: one ``error:`` line, exit 2.

Crash consistency: SIGKILL at points drawn by a seeded RNG over the run's timeline — half at a
uniformly random time of the training phase, half just as a checkpoint starts being written —
then, by a second draw, tear the newest checkpoint (or leave a written-but-uncommitted one
beside it), resume, and check that the resume picked the newest intact checkpoint and that
the metrics equal the uninterrupted run's. ``TUNESMITH_CRASH_POINTS`` sets the number of
points (default 20) and ``TUNESMITH_CRASH_SEED`` the seed; the test prints where each kill
landed. The runs are forked from one warm interpreter (the session's ``fork_trainer``), so
each costs under a second instead of a fresh torch import.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from pathlib import Path

import factory
import pytest
import yaml
from resume_harness import ForkTrainer, metric_rows

from tunesmith import rundir
from tunesmith.engine import checkpoint as ckpt

STEPS, SAVE_EVERY = 12, 2
POINTS = int(os.environ.get("TUNESMITH_CRASH_POINTS", "20"))
SEED = int(os.environ.get("TUNESMITH_CRASH_SEED", "20240607"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_tokenizer, fork_trainer):
    """(fork server, a function writing the run config for an output dir, reference rows)."""
    root = tmp_path_factory.mktemp("integrity")
    model = root / "model"
    factory.build_model(
        model,
        "llama",
        vocab_size=len(tiny_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    tiny_tokenizer.save_pretrained(model)
    data = factory.write_jsonl(root / "train.jsonl", factory.color_chats(44, seed=5))

    def config(name: str) -> Path:
        cfg = {
            "model": str(model),
            "output_dir": str(root / name),
            "data": {"train": str(data), "eval_fraction": 0.1},
            "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.1},  # dropout: RNG state matters
            "train": {
                "max_steps": STEPS,
                "batch_size": 2,
                "max_length": 64,
                "lr": 2e-3,
                "save_every": SAVE_EVERY,
                "eval_every": 4,
                "keep_last": 2,
                "threads": 1,
                "device": "cpu",
                "dtype": "fp32",
                "progress": "lines",
            },
        }
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    rc, out = fork_trainer.run(["train", str(config("ref"))], root / "ref.log")
    assert rc == 0, out
    return fork_trainer, config, metric_rows(root / "ref")


# -- damage -------------------------------------------------------------------------------------


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def flip_byte(path: Path) -> None:
    """Same size, other content: a tensor value changes; only the hash can tell."""
    data = bytearray(path.read_bytes())
    data[len(data) * 3 // 4] ^= 0x01
    path.write_bytes(bytes(data))


TEARS = {  # name -> (file it damages, damage)
    "truncate-optim": ("optim.pt", truncate),
    "truncate-safetensors": ("trainable.safetensors", truncate),
    "delete-optim": ("optim.pt", Path.unlink),
    "flip-byte": ("trainable.safetensors", flip_byte),
}


def committed(run: Path) -> list[Path]:
    return ckpt.list_checkpoints(run / "checkpoints")


def kill_when(server: ForkTrainer, config: Path, log: Path, ready, delay_s: float = 0.0) -> int:
    """Start training (output to ``log``), poll ``ready(log text)`` every ~0.5 ms and SIGKILL
    ``delay_s`` after it holds; the exit code (-9 when killed, 0 when the run finished first)."""
    pid = server.start(["train", str(config)], log)
    deadline = time.monotonic() + 120
    while not ready(_text(log)) and server.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.0005)
    if delay_s:
        time.sleep(delay_s)
    server.kill(pid)  # a no-op when it finished first
    return server.wait()


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


# -- regression ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def killed_after_second_checkpoint(setup):
    server, config, _ = setup
    cfg = config("killed")
    run = Path(yaml.safe_load(cfg.read_text())["output_dir"])
    second = run / "checkpoints" / f"step-{2 * SAVE_EVERY:06d}" / "COMMITTED"
    assert kill_when(server, cfg, cfg.with_suffix(".kill.log"), lambda _: second.exists()) == -signal.SIGKILL
    assert len(committed(run)) == 2 and not (run / "final").exists()
    return run


def copy_run(config, run: Path, name: str) -> tuple[Path, Path]:
    cfg = config(name)
    shutil.copytree(run, cfg.parent / name)
    return cfg, cfg.parent / name


@pytest.mark.parametrize("tear", sorted(TEARS))
def test_damaged_newest_checkpoint_resumes_from_the_older_one(setup, killed_after_second_checkpoint, tear):
    server, config, expected = setup
    cfg, run = copy_run(config, killed_after_second_checkpoint, f"torn-{tear}")
    older, newest = committed(run)
    name, damage = TEARS[tear]
    damage(newest / name)
    rc, out = server.run(["train", str(cfg), "--resume"], run.with_suffix(".log"))
    assert rc == 0, out
    assert f"skipping damaged checkpoint {newest}: {name}" in out
    assert f"resumed from {older} at step" in out
    assert metric_rows(run) == expected
    assert all(ckpt.verify_checkpoint(p) is None for p in committed(run))  # the damaged one was rewritten


def test_no_usable_checkpoint_is_one_error_line_and_exit_2(setup, killed_after_second_checkpoint):
    server, config, _ = setup
    cfg, run = copy_run(config, killed_after_second_checkpoint, "all-torn")
    for path in committed(run):
        truncate(path / "optim.pt")
    rc, out = server.run(["train", str(cfg), "--resume"], run.with_suffix(".log"))
    assert rc == 2, out
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and out.rstrip().endswith(errors[0])
    assert errors[0].startswith(f"error: no usable checkpoint in {run / 'checkpoints'}")


# -- crash consistency --------------------------------------------------------------------------

STARTED = "train sequences in"  # the log line written just before the resume decision and step 1


def reference_timeline(setup) -> float:
    """Seconds from the log's ``data: …`` line to the last step's line in a run like the
    reference: the span over which kills are drawn."""
    server, config, _ = setup
    spans = []
    for attempt in range(2):  # the shorter of two: a busy machine only ever slows a run down
        log = config(f"timeline-{attempt}").with_suffix(".log")
        server.start(["train", str(log.with_suffix(".yaml"))], log)
        first = None
        while True:
            text = _text(log)
            first = time.monotonic() if first is None and STARTED in text else first
            if f"step {STEPS}/{STEPS} |" in text:
                break
            time.sleep(0.0005)
        spans.append(time.monotonic() - first)
        assert server.wait() == 0
    return min(spans)


KINDS = ["none", "uncommitted-newer", *sorted(TEARS)]  # what happens to the newest checkpoint


def crash_point(setup, i: int, rng: random.Random, span: float, tear: str) -> dict:
    """Kill a run at a random point, apply ``tear``, and resume — in half of the points the
    resume is killed too (at a random point, possibly while it rewrites the torn checkpoint)
    and resumed once more. Returns what happened and whether every resume was right."""
    server, config, expected = setup
    cfg = config(f"crash-{i:02d}")
    run = Path(yaml.safe_load(cfg.read_text())["output_dir"])
    when, rc = kill_randomly(server, cfg, run.with_suffix(".kill1.log"), rng, span, 0)
    landed = _landing(run)
    tear, damaged = apply_tear(run, tear)
    checks = {"killed": rc == -signal.SIGKILL}
    want = newest_intact(run, damaged)
    if rng.random() < 0.5 and (want is None or rundir.step_of(want) < STEPS - SAVE_EVERY):
        log = run.with_suffix(".kill2.log")
        when2, rc2 = kill_randomly(server, cfg, log, rng, span, rundir.step_of(want) if want else 0)
        checks["resume killed"] = rc2 == -signal.SIGKILL
        checks["killed resume chose the newest intact checkpoint"] = _resumed_right(
            _text(log), want, partial=True
        )
        when += f"; resume killed {when2}"
    want = newest_intact(run, damaged)
    rc3, out = server.run(["train", str(cfg)], run.with_suffix(".log"))
    checks["finished"] = rc3 == 0
    checks["resumed from the newest intact checkpoint"] = _resumed_right(out, want)
    checks["losses equal the uninterrupted run's"] = rc3 == 0 and metric_rows(run) == expected
    failed = [k for k, ok in checks.items() if not ok]
    return {
        "i": i,
        "when": when,
        "landed": landed,
        "tear": tear,
        "resume": want.name if want else "scratch",
        "ok": not failed,
        "failed": failed,
        "log": out if failed else "",
    }


def kill_randomly(
    server, cfg: Path, log: Path, rng: random.Random, span: float, after: int
) -> tuple[str, int]:
    """SIGKILL a run of ``cfg`` (resuming at step ``after``) at a point drawn from ``rng``: half
    the time a uniformly random moment of its ``span`` seconds of training, else just as a
    checkpoint after ``after`` starts being written (right after its step's progress line).
    (where, exit code)."""
    if rng.random() < 0.5:
        at = rng.uniform(0.0, 0.9)
        when, delay, anchor = f"{at:.0%} into training", at * span * (STEPS - after) / STEPS, STARTED
    else:
        step = SAVE_EVERY * rng.randint(after // SAVE_EVERY + 1, STEPS // SAVE_EVERY - 1)
        delay, anchor = rng.uniform(0.0, 0.004), f"step {step}/{STEPS} |"
        when = f"{delay * 1000:.1f} ms after step {step}"
    return when, kill_when(server, cfg, log, lambda text: anchor in text, delay)


def apply_tear(run: Path, tear: str) -> tuple[str, tuple[Path, int] | None]:
    """Damage the newest committed checkpoint (only when an older one exists), or leave a
    written-but-uncommitted newer one beside it. (what was done, (damaged dir, its inode))."""
    good = committed(run)
    if tear in TEARS and len(good) >= 2:
        name, damage = TEARS[tear]
        damage(good[-1] / name)
        return tear, (good[-1], good[-1].stat().st_ino)
    if tear == "uncommitted-newer" and good:
        fake = run / "checkpoints" / f".tmp-step-{rundir.step_of(good[-1]) + SAVE_EVERY:06d}"
        if not fake.exists():  # else the kill itself left one
            shutil.copytree(good[-1], fake)
            (fake / ckpt.MARKER).unlink()
            truncate(fake / "optim.pt")
        return tear, None
    return "none", None


def newest_intact(run: Path, damaged: tuple[Path, int] | None) -> Path | None:
    """The newest committed checkpoint, unless it is the one we damaged and it has not been
    rewritten since (a rewrite renames a new directory into place: another inode)."""
    for path in reversed(committed(run)):
        if damaged and path == damaged[0] and path.stat().st_ino == damaged[1]:
            continue
        return path
    return None


def _resumed_right(out: str, want: Path | None, partial: bool = False) -> bool:
    """The run's log says it resumed from ``want`` (or started from scratch when None); a
    run killed before it got that far (``partial``) proves nothing either way. A run that had
    already finished (killed while writing its report) resumes nothing: it says it is complete
    at ``want``, the newest checkpoint, which it verified."""
    if partial and STARTED not in out:
        return True
    if want is None:
        return "resumed from" not in out
    complete = f"already complete at step {rundir.step_of(want)} (checkpoint {want})" in out
    return f"resumed from {want} at step" in out or complete or (partial and "resumed from" not in out)


def _landing(run: Path) -> str:
    """Where a kill left the checkpoints directory."""
    root = run / "checkpoints"
    if any(root.glob(".tmp-step-*")):
        return "inside checkpoint writing"
    steps = [rundir.step_of(p) for p in committed(run)]
    return f"after checkpoint {steps[-1]}" if steps else "before the first checkpoint"


def test_sigkill_anywhere_then_resume_matches_uninterrupted(setup, capsys):
    span = reference_timeline(setup)
    rng = random.Random(SEED)
    tears = (KINDS * POINTS)[:POINTS]  # every kind of tear, evenly, in a seeded order
    rng.shuffle(tears)
    results = [crash_point(setup, i, rng, span, tear) for i, tear in enumerate(tears)]
    ok = sum(r["ok"] for r in results)
    with capsys.disabled():
        print(f"\ncrash consistency: {ok}/{POINTS} (seed {SEED}, training phase {span * 1000:.0f} ms)")
        for r in results:
            print(
                f"  {r['i']:2d} {'ok ' if r['ok'] else 'BAD'} kill {r['when']:<24} {r['landed']:<28} "
                f"tear {r['tear']:<21} resume {r['resume']} {' '.join(r['failed'])}"
            )
    bad = [r for r in results if not r["ok"]]
    assert not bad, (
        f"{len(bad)}/{POINTS} crash points failed; first: {bad[0]['failed']}\n{bad[0]['log'][-3000:]}"
    )
