"""The method / loss registry: what config/ and data/ read from it, torch-free."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest

from tunesmith.config import load_config
from tunesmith.config.registry import LOSSES, METHODS, PAIR_LOSS_NAMES, needs_reference, suggest_method
from tunesmith.config.schema import PreferenceConfig, RunConfig
from tunesmith.data.formats import FORMAT_LABELS


def test_the_config_layer_and_the_registry_import_no_torch():
    code = "import sys, tunesmith.config, tunesmith.config.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_schema_choices_are_the_registry():
    assert typing.get_args(typing.get_type_hints(RunConfig)["method"]) == tuple(METHODS)
    assert typing.get_args(typing.get_type_hints(PreferenceConfig)["loss"]) == PAIR_LOSS_NAMES
    assert PreferenceConfig().loss == PAIR_LOSS_NAMES[0]


def test_every_declared_name_exists():
    for spec in METHODS.values():
        assert spec.formats and set(spec.formats) <= set(FORMAT_LABELS), spec.name
        assert set(spec.losses) <= set(LOSSES), spec.name
        assert set(spec.sections) <= {"preference", "grpo", "distill"}, spec.name
    for loss in LOSSES.values():
        assert set(loss.params) <= set(typing.get_type_hints(PreferenceConfig)), loss.name


@pytest.mark.parametrize(
    ("method", "loss", "expected"),
    [
        ("dpo", "sigmoid", True),
        ("dpo", "ipo", True),
        ("dpo", "simpo", False),
        ("dpo", "orpo", False),
        ("dpo", "apo_zero", True),
        ("kto", "sigmoid", True),  # KTO has one loss; preference.loss does not apply to it
        ("reward", "sigmoid", False),
        ("sft", "sigmoid", False),
        ("grpo", "sigmoid", False),
    ],
)
def test_needs_reference_is_the_loss_s(method, loss, expected):
    cfg = load_config({"model": "m", "method": method, "preference": {"loss": loss}})
    assert needs_reference(cfg) is expected


def test_suggested_method_per_format():
    got = {fmt: suggest_method(fmt) for fmt in FORMAT_LABELS}
    assert got == {
        "openai_chat": "sft",
        "sharegpt": "sft",
        "alpaca": "sft",
        "prompt_completion": "sft",
        "text": "sft",
        "openai_preference": "dpo",
        "preference_pairs": "dpo",
        "kto": "kto",
        "prompt_only": "grpo",
    }
