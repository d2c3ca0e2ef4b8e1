"""Every kind of model `tunesmith eval` loads scores the same when it holds the same weights:
an adapter folder over its base, and the same adapter merged into a full model."""

from __future__ import annotations

import pytest

from tunesmith.eval.evaluate import run_eval
from tunesmith.eval.runner import EvalOptions
from tunesmith.export.merge import merge_adapter


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter with random (non-zero) A and B, so it really changes the base's outputs."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tunesmith.models.load import load_causal_lm, load_tokenizer

    torch.manual_seed(0)
    model = load_causal_lm(str(tiny_model_dir))
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    out = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(out, safe_serialization=True)
    load_tokenizer(str(tiny_model_dir)).save_pretrained(out)
    return out


def test_adapter_and_merged_model_score_identically(adapter_dir, color_data, tmp_path):
    merged = tmp_path / "merged"
    merge_adapter(str(adapter_dir), str(merged))
    report = run_eval(
        str(adapter_dir),
        str(color_data[1]),
        compare_with=[str(merged), "base"],
        limit=8,
        options=EvalOptions(max_new_tokens=8, n_resamples=200),
        out_dir=tmp_path / "r",
    )
    kinds = {m["name"]: m["kind"] for m in report["models"]}
    assert kinds == {str(adapter_dir): "adapter", str(merged): "full", "base": "base"}
    same, vs_base = report["comparisons"]
    assert same["metrics"]["loss"]["diff"] == pytest.approx(0.0, abs=1e-4)
    assert same["metrics"]["token_accuracy"]["diff"] == 0.0
    assert same["metrics"]["rouge_l"]["win"] == same["metrics"]["rouge_l"]["loss"] == 0
    answers = [r["answers"] for r in report["examples"]]
    assert all(a[str(adapter_dir)] == a[str(merged)] for a in answers)
    # ... and the adapter is not a no-op: the base scores differently.
    assert abs(vs_base["metrics"]["loss"]["diff"]) > 1e-3


def test_unknown_specs_are_clear_errors(adapter_dir, tiny_model_dir, color_data, tmp_path):
    from tunesmith.errors import ConfigError

    with pytest.raises(ConfigError, match="'final' needs a run"):
        run_eval(str(tiny_model_dir), str(color_data[1]), compare_with=["final"], out_dir=tmp_path)
    with pytest.raises(ConfigError, match="'base' is unknown"):
        run_eval(str(tiny_model_dir), str(color_data[1]), compare_with=["base"], out_dir=tmp_path)
    with pytest.raises(ConfigError, match="not base, final, latest, step-N"):
        run_eval(
            str(adapter_dir), str(color_data[1]), compare_with=[str(tmp_path / "nope")], out_dir=tmp_path
        )
    with pytest.raises(ConfigError, match="eval target not found"):
        run_eval(str(tmp_path / "missing"), str(color_data[1]))
