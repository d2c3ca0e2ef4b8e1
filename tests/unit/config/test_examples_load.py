"""Every shipped config under examples/ parses and validates through tunesmith's own loader (no
training), and the files it names are there: a config that drifted from the schema, or points
at a renamed data file, fails here in a second instead of in a user's first run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tunesmith.config import load_config
from tunesmith.methods import validate  # the torch-free checks, then each method's own

ROOT = Path(__file__).resolve().parents[3]
# examples/**/lm_eval/ holds lm-evaluation-harness task files, not run configs
# (tests/integration/test_lm_eval_harness.py runs them)
EXAMPLES = sorted(p for p in (ROOT / "examples").rglob("*.y*ml") if "lm_eval" not in p.parts)


def test_examples_are_found():
    """The glob below is not vacuous: the configs the docs point at are collected."""
    names = {p.relative_to(ROOT).as_posix() for p in EXAMPLES}
    assert {
        "examples/quickstart/lora.yaml",
        "examples/preference/dpo.yaml",
        "examples/grpo/numbers.yaml",
    } <= names


def _defines(path: Path, name: str) -> bool:
    """Whether the Python file at ``path`` defines a top-level function ``name``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(node, ast.FunctionDef) and node.name == name for node in tree.body)


def _as_list(value: str | list[str] | None) -> list[str]:
    return value if isinstance(value, list) else [value] if value else []


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.relative_to(ROOT / "examples").as_posix())
def test_example_config_loads_and_validates(path):
    cfg = load_config(path)
    validate(cfg)
    # Paths in the examples are relative to the repository root (where the docs run them).
    model = cfg.model.path
    setup = (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    assert (ROOT / model).exists() or model in setup, f"{path.name}: model {model} is not shipped"
    for item in _as_list(cfg.data.train) + _as_list(cfg.data.eval):
        assert (ROOT / item).is_file(), f"{path.name}: data file {item} is missing"
    for reward in cfg.grpo.rewards if cfg.method == "grpo" else []:
        if reward.type == "python":
            file, _, name = reward.function.rpartition(":")
            assert _defines(ROOT / file, name), f"{path.name}: {reward.function} is not defined"
