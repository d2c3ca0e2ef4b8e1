"""The command line's shape: one module per command group, ``merge`` = ``export --format hf``,
``serve`` and ``server`` told apart by their help."""

from __future__ import annotations

from tunesmith.cli import build_parser


def _parse(*argv):
    return build_parser().parse_args(list(argv))


def test_merge_is_export_format_hf():
    merge = _parse("merge", "runs/r", "--out", "m", "--model", "base", "--tolerance", "0.01")
    export = _parse(
        "export", "runs/r", "--out", "m", "--model", "base", "--tolerance", "0.01", "--format", "hf"
    )
    assert merge.func is export.func
    for key in ("run", "out", "model", "tolerance", "format"):
        assert getattr(merge, key) == getattr(export, key), key


def test_serve_and_server_help_name_each_other():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    helps = {a.dest: a.help for a in sub._choices_actions}
    assert "inference" in helps["serve"] and "`server`" in helps["serve"]
    assert "fine-tuning" in helps["server"] and "`serve`" in helps["server"]


def test_every_group_module_registers_its_commands():
    commands = set(next(a for a in build_parser()._actions if a.dest == "command").choices)
    assert {
        "train",
        "config",
        "generate",
        "chat",
        "data",
        "import",
        "estimate",
        "distill",
        "eval",
    } <= commands
    assert {"serve", "export", "merge", "server", "worker", "reward", "openai"} <= commands


def test_help_and_data_check_do_not_import_torch(tmp_path):
    """Commands that load no model start without importing torch or transformers (seconds)."""
    import subprocess
    import sys

    rows = tmp_path / "chats.jsonl"
    line = '{"messages":[{"role":"user","content":"hi %d"},{"role":"assistant","content":"hello"}]}\n'
    rows.write_text("".join(line % i for i in range(12)), encoding="utf-8")
    probe = (
        "import sys, contextlib, io\n"
        "from tunesmith.cli import main\n"
        "for argv in (['--help'], ['data', 'check', sys.argv[1]]):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(rows)], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
