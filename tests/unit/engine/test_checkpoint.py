"""engine.checkpoint: the manifest in COMMITTED, what verify_checkpoint reports for each kind of
damage, the resume rule (newest checkpoint that verifies and loads, else one-line error), old
markers, and rotation when newer checkpoints are damaged."""

from __future__ import annotations

import json
import logging
import os
import re

import pytest
import torch

from tunesmith.engine import checkpoint as ckpt
from tunesmith.errors import CheckpointError
from tunesmith.hashing import sha256_file


def save(root, step, keep_last=5):
    """A small but real checkpoint whose contents depend on ``step``."""
    w = torch.full((4, 3), float(step))
    return ckpt.save_checkpoint(
        root,
        step,
        trainable={"w": w},
        optim_state={
            "optimizer": {"state": {0: {"exp_avg": w * 2}}, "param_groups": []},
            "scheduler": {"last_epoch": step},
        },
        rng={"torch": torch.get_rng_state()},
        state={"step": step},
        keep_last=keep_last,
    )


def truncate(path, keep=0.5):
    os.truncate(path, int(path.stat().st_size * keep))


def flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_committed_is_a_manifest_of_every_file(tmp_path):
    path = save(tmp_path, 4)
    manifest = json.loads((path / "COMMITTED").read_text())
    assert manifest["step"] == 4
    assert sorted(manifest["files"]) == sorted(ckpt.FILES)
    for name, entry in manifest["files"].items():
        assert entry == {"bytes": (path / name).stat().st_size, "sha256": sha256_file(path / name)}
    assert ckpt.verify_checkpoint(path) is None


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda p: truncate(p / "optim.pt"), r"^optim\.pt: \d+ bytes, COMMITTED says \d+$"),
        (lambda p: truncate(p / "trainable.safetensors"), r"^trainable\.safetensors: \d+ bytes"),
        (lambda p: (p / "optim.pt").unlink(), r"^optim\.pt missing$"),
        (lambda p: flip_byte(p / "rng.pt"), r"^rng\.pt: content differs from COMMITTED \(sha256 "),
        (lambda p: (p / "COMMITTED").write_text('{"step": 4, "fi'), r"^COMMITTED unreadable"),
        (lambda p: (p / "COMMITTED").write_bytes(b""), r"^COMMITTED unreadable"),
        (lambda p: (p / "COMMITTED").write_text('{"step": 4}'), r"^COMMITTED unreadable"),
    ],
    ids=[
        "truncated-optim",
        "truncated-safetensors",
        "missing-optim",
        "flipped-byte",
        "torn-marker",
        "empty-marker",
        "marker-without-files",
    ],
)
def test_verify_names_the_bad_file(tmp_path, damage, reason):
    path = save(tmp_path, 4)
    damage(path)
    got = ckpt.verify_checkpoint(path)
    assert got is not None and re.search(reason, got), got


def test_resume_falls_back_past_a_damaged_checkpoint_with_a_warning(tmp_path, caplog):
    save(tmp_path, 2)
    newest = save(tmp_path, 4)
    truncate(newest / "optim.pt")
    with caplog.at_level(logging.WARNING, logger="tunesmith"):
        found = ckpt.load_newest_good(tmp_path)
    assert found.path.name == "step-000002" and found.data["state"] == {"step": 2}
    assert torch.equal(found.data["trainable"]["w"], torch.full((4, 3), 2.0))
    assert any("step-000004" in r.message and "optim.pt" in r.message for r in caplog.records)
    assert ckpt.latest_good_checkpoint(tmp_path).name == "step-000002"
    assert ckpt.latest_checkpoint(tmp_path).name == "step-000004"  # unverified, as before


def test_only_the_chosen_checkpoint_is_hashed(tmp_path, monkeypatch):
    for step in (2, 4, 6):
        save(tmp_path, step)
    hashed = []
    real = ckpt.sha256_file
    monkeypatch.setattr(ckpt, "sha256_file", lambda p: hashed.append(p.parent.name) or real(p))
    assert ckpt.load_newest_good(tmp_path).path.name == "step-000006"
    assert set(hashed) == {"step-000006"}


def test_none_usable_is_one_line_error_and_none_committed_is_none(tmp_path):
    assert ckpt.load_newest_good(tmp_path) is None
    assert ckpt.latest_good_checkpoint(tmp_path / "absent") is None
    for step in (2, 4):
        (save(tmp_path, step) / "optim.pt").unlink()
    for find in (ckpt.load_newest_good, ckpt.latest_good_checkpoint):
        with pytest.raises(CheckpointError) as err:
            find(tmp_path)
        assert "\n" not in str(err.value) and "step-000002, step-000004" in str(err.value)


def test_verified_but_unloadable_falls_back(tmp_path, caplog):
    """Belt and braces: a file whose manifest entry was rewritten to match garbage verifies,
    fails to load, and the resume still moves on to the next older checkpoint."""
    save(tmp_path, 2)
    path = save(tmp_path, 4)
    (path / "optim.pt").write_bytes(b"not a torch file")
    manifest = json.loads((path / "COMMITTED").read_text())
    manifest["files"]["optim.pt"] = {"bytes": 16, "sha256": sha256_file(path / "optim.pt")}
    (path / "COMMITTED").write_text(json.dumps(manifest))
    assert ckpt.verify_checkpoint(path) is None
    with caplog.at_level(logging.WARNING, logger="tunesmith"):
        assert ckpt.load_newest_good(tmp_path).path.name == "step-000002"
    assert any("optim.pt is corrupt or unreadable" in r.message for r in caplog.records)


def test_old_format_marker_is_unverified_but_committed(tmp_path):
    """Checkpoints from before the manifest hold the bare step number: they resume; a missing
    file is caught by verify, a damaged one by loading."""
    older, newest = save(tmp_path, 2), save(tmp_path, 4)
    for path, step in ((older, 2), (newest, 4)):
        (path / "COMMITTED").write_text(str(step))
        assert ckpt.read_manifest(path) is None and ckpt.verify_checkpoint(path) is None
    assert ckpt.load_newest_good(tmp_path).path == newest
    truncate(newest / "optim.pt")
    assert ckpt.verify_checkpoint(newest) is None  # no hashes to compare
    assert ckpt.load_newest_good(tmp_path).path == older
    (newest / "optim.pt").unlink()
    assert ckpt.verify_checkpoint(newest) == "optim.pt missing"


def test_rotation_never_keeps_damaged_newer_checkpoints_over_the_new_one(tmp_path):
    """Resumed from step 2 past a damaged step 4, the run writes step 3 with keep_last=1: step 3
    is kept; step 4 (an abandoned timeline, rewritten later) and step 2 (rotated) are removed."""
    save(tmp_path, 2)
    truncate(save(tmp_path, 4) / "optim.pt")
    (tmp_path / ".tmp-step-000006").mkdir()  # a writer killed before its marker
    (tmp_path / ".old-step-000001").mkdir()  # a deletion killed half-way
    save(tmp_path, 3, keep_last=1)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000003"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000003"]
    assert ckpt.latest_good_checkpoint(tmp_path).name == "step-000003"


def test_rewriting_a_damaged_step_replaces_it(tmp_path):
    save(tmp_path, 2)
    flip_byte(save(tmp_path, 4) / "trainable.safetensors")
    save(tmp_path, 4, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000002", "step-000004"]
    assert ckpt.verify_checkpoint(tmp_path / "step-000004") is None


def test_a_manifest_naming_files_elsewhere_is_unreadable(tmp_path):
    path = save(tmp_path, 4)
    manifest = json.loads((path / "COMMITTED").read_text())
    manifest["files"]["../step-000002/optim.pt"] = manifest["files"]["optim.pt"]
    (path / "COMMITTED").write_text(json.dumps(manifest))
    assert ckpt.verify_checkpoint(path).startswith("COMMITTED unreadable")
