"""Every shipped config under examples/ parses and validates through tunesmith's own loader (no
training), and the files it names are there: a config that drifted from the schema, or points
at a renamed data file, fails here in a second instead of in a user's first run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tunesmith.config import load_config
from tunesmith.config.schema import as_sources
from tunesmith.methods import validate  # the torch-free checks, then each method's own
from tunesmith.models.hub import is_hub_id

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
        "examples/families/llama3.2-1b-base-gpu.yaml",
        "examples/families/qwen2.5-0.5b-instruct.yaml",
    } <= names


GRADERS = sorted((ROOT / "examples").rglob("graders/*.json"))


@pytest.mark.parametrize("path", GRADERS, ids=lambda p: p.relative_to(ROOT / "examples").as_posix())
def test_example_graders_parse(path):
    """The grader files the docs pass to `tunesmith eval --grader` are valid OpenAI graders whose
    templates read fields the support held-out rows have."""
    import json

    from tunesmith.graders.load import item_keys, read_grader

    spec, _ = read_grader(path)
    row = json.loads((ROOT / "examples/support/heldout.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert item_keys(spec) <= set(row)


def _defines(path: Path, name: str) -> bool:
    """Whether the Python file at ``path`` defines a top-level function ``name``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(node, ast.FunctionDef) and node.name == name for node in tree.body)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.relative_to(ROOT / "examples").as_posix())
def test_example_config_loads_and_validates(path):
    cfg = load_config(path)
    validate(cfg)
    # Paths in the examples are relative to the repository root (where the docs run them). A
    # model is either shipped (a file or folder here, or one scripts/setup.sh makes) or named by
    # Hugging Face Hub id (examples/families/: fetched where the network allows) — never a path
    # that merely does not exist.
    model = cfg.model.path
    setup = (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    shipped = (ROOT / model).exists() or model in setup
    assert shipped or is_hub_id(model), f"{path.name}: model {model} is neither shipped nor a Hub id"
    if not shipped:
        assert path.parent.name == "families", f"{path.name}: Hub-id models belong in examples/families/"
    for item in as_sources(cfg.data.train) + as_sources(cfg.data.eval):
        assert (ROOT / item.path).exists(), f"{path.name}: data file {item.path} is missing"
    for reward in cfg.grpo.rewards if cfg.method == "grpo" else []:
        if reward.type == "python":
            file, _, name = reward.function.rpartition(":")
            assert _defines(ROOT / file, name), f"{path.name}: {reward.function} is not defined"
