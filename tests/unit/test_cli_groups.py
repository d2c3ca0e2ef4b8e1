"""The command line's shape: one module per command group, ``merge`` = ``export --format hf``,
``serve`` and ``server`` told apart by their help."""

from __future__ import annotations

import argparse

import pytest

from tunesmith import __version__
from tunesmith.cli import build_parser, main


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
        "for argv in (['--help'], ['--version'], ['config'], ['data', '--help'], ['data', 'check', sys.argv[1]]):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(rows)], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def _parsers(parser, path=()):
    """(command path, parser) for the root and every sub-command, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, (*path, name))


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"tunesmith {__version__}"


def test_every_option_has_help_and_shows_its_default():
    checked = 0
    for path, parser in _parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(
                action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
            ):
                continue
            where = f"tunesmith {' '.join(path)} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help.strip(), f"{where}: no help"
            default = action.default
            if (
                action.option_strings
                and default not in (None, [], argparse.SUPPRESS)
                and not isinstance(default, bool)
            ):
                text = formatter._expand_help(action)
                assert "default" in text, f"{where}: help does not state the default {default!r}"
                checked += 1
    assert checked > 40  # the walk reaches the sub-commands' options


def test_data_help_lists_all_five_subcommands(capsys):
    names = ("check", "show", "split", "scrub", "convert")
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    summary = next(a.help for a in sub._choices_actions if a.dest == "data")
    assert all(n in summary for n in names)
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    out = capsys.readouterr().out
    assert all(f"    {n} " in out for n in names)  # each listed with its help line
