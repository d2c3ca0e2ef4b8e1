"""`tunesmith serve` / `tunesmith export` argument errors are clear messages, not tracebacks."""

from tunesmith.cli import main


def test_bad_adapter_spec(capsys):
    assert main(["serve", "--model", "models/tunesmith-base", "--adapter", "no-equals-sign"]) == 2
    assert "expected NAME=PATH" in capsys.readouterr().err


def test_missing_model_folder(capsys, tmp_path):
    assert main(["serve", "--model", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err


def test_export_without_adapter_for_adapter_format(capsys, tiny_model_dir, tmp_path):
    assert main(["export", str(tiny_model_dir), "--format", "adapter", "--out", str(tmp_path / "o")]) == 2
    assert "holds no adapter" in capsys.readouterr().err
