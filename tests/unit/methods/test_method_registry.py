"""Every registered method and loss has its implementation where the methods layer looks."""

from __future__ import annotations

import inspect

import pytest

from tunesmith.config import load_config
from tunesmith.config.registry import LOSSES, METHODS
from tunesmith.errors import ConfigError
from tunesmith.losses import preference as preference_losses
from tunesmith.methods import get_method, validate
from tunesmith.methods.preference import loss_function


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_has_its_module(name):
    module = get_method(name)
    assert callable(module.prepare_data) and callable(module.build)


@pytest.mark.parametrize("name", METHODS["dpo"].losses)
def test_every_pair_loss_is_a_function_taking_its_declared_params(name):
    fn = loss_function(name)
    keywords = {p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY}
    assert keywords == set(LOSSES[name].params)


def test_kto_loss_takes_its_declared_params():
    keywords = inspect.signature(preference_losses.kto_loss).parameters
    assert set(LOSSES["kto"].params) <= set(keywords)


def test_unknown_method_names_the_known_ones():
    with pytest.raises(ValueError, match="known: distill, dpo, grpo, kto, pretrain, reward, sft"):
        get_method("ppo")


def test_method_validation_runs_the_method_s_own_checks(tmp_path):
    raw = {"model": "m", "method": "grpo", "data": {"train": "t.jsonl"}}
    grader = {"type": "string_check", "name": "g", "input": "{{sample.output_text}}", "operation": "eq"}
    cfg = load_config({**raw, "grpo": {"rewards": [{"type": "grader", "grader": grader}]}})
    with pytest.raises(ConfigError, match=r"grpo\.rewards\[0\]\.grader"):
        validate(cfg)  # the grader lacks 'reference': found by GRPO's validate_config
