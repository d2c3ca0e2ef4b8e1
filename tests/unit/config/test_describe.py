"""``tunesmith config``: every key with its default under the schema's own description, as YAML
comments; loading the output gives the default config."""

from __future__ import annotations

import dataclasses
import typing

import yaml

from tunesmith.cli import main
from tunesmith.config import RunConfig, config_to_dict
from tunesmith.config.describe import commented_config, field_docs


def test_output_is_the_default_config():
    assert yaml.safe_load(commented_config()) == config_to_dict(RunConfig())


def _sections():
    """("", RunConfig) for the top level, then (name, class) of each section."""
    yield "", RunConfig
    for name, hint in typing.get_type_hints(RunConfig).items():
        if dataclasses.is_dataclass(hint):
            yield name, hint


def test_every_documented_key_sits_under_its_description():
    lines = commented_config().splitlines()
    docs = field_docs()
    checked = 0
    for section, cls in _sections():
        pad = "  " if section else ""
        start = lines.index(f"{section}:") if section else 0
        for name, doc in docs[cls.__name__].items():
            key = name.rstrip("_")
            at = next(i for i in range(start, len(lines)) if lines[i].startswith(f"{pad}{key}:"))
            first = doc.splitlines()[0]
            top = at
            while top > 0 and lines[top - 1].lstrip().startswith("#"):
                top -= 1  # the comment block right above the key
            assert f"{pad}# {first}".rstrip() in lines[top:at], f"{section}.{key}: description not above it"
            checked += 1
    assert checked > 90


def test_sections_are_introduced_by_their_docstrings():
    text = commented_config()
    assert "# The optimisation loop.\ntrain:\n" in text
    assert "  # Peak learning rate; ``auto``: 2e-4 for adapters" in text
    assert "#   type: exact_match" in text  # grpo.rewards items document their keys


def test_cli_prints_it(capsys):
    assert main(["config"]) == 0
    assert capsys.readouterr().out == commented_config()
