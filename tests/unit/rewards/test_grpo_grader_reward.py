"""GRPO reward ``type: grader``: OpenAI graders scoring completions, numbers worked out by hand.

Each test builds the reward the way a run does (``build_rewards`` over ``GrpoRewardConfig``)
and scores fixed ``Sample``s, so the sample/item namespaces, the weighting, the error rule
(a grader error scores 0 and is counted) and the config errors are what training sees.
"""

from __future__ import annotations

import json
import logging

import pytest

from tunesmith.config import load_config
from tunesmith.config.schema import GrpoRewardConfig as Spec
from tunesmith.errors import ConfigError
from tunesmith.graders.sandbox import SandboxConfig, available_backends
from tunesmith.methods import validate
from tunesmith.rewards import Sample, build_rewards, required_fields
from tunesmith.rewards.grader import grader_item

EXACT = {
    "type": "string_check",
    "name": "Exact answer",
    "operation": "eq",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
}


def _reward(grader, **kw):
    return build_rewards([Spec(type="grader", grader=grader, **kw)], max_new_tokens=16)


def test_string_check_over_the_completion_and_the_example_fields():
    rs = _reward(EXACT)
    assert rs.names == ["exact_answer"]  # the grader's name, as a metric name
    samples = [
        Sample("q", "42", 2, {"answer": "42"}),
        Sample("q", "42 ", 2, {"answer": "42"}),
        Sample("q", "41", 2, {"answer": "42"}),
    ]
    # eq is exact: "42 " != "42" (GRPO strips the decoded completion before it gets here)
    total, per = rs.score(samples)
    assert total == [1.0, 0.0, 0.0]
    assert per == {"exact_answer": [1.0, 0.0, 0.0], "exact_answer_errors": [0.0, 0.0, 0.0]}


def test_item_holds_the_row_prompt_and_messages():
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]
    assert grader_item(Sample(chat, "4", 1, {"answer": "4"})) == {
        "prompt": chat,
        "messages": chat,
        "answer": "4",
    }
    assert grader_item(Sample("2+2?", "4", 1, {}))["messages"] == [{"role": "user", "content": "2+2?"}]
    # {{item.messages[1].content}} works as on OpenAI's RFT rows; like = substring, case-sensitive
    echo = {
        "type": "string_check",
        "name": "echo",
        "operation": "like",
        "input": "{{sample.output_text}}",
        "reference": "{{item.messages[1].content}}",
    }
    total, _ = _reward(echo).score([Sample(chat, "you asked 2+2? -> 4", 3, {}), Sample(chat, "4", 1, {})])
    assert total == [1.0, 0.0]


def test_output_json_namespace():
    g = {
        "type": "string_check",
        "name": "json_field",
        "operation": "eq",
        "input": "{{sample.output_json.city}}",
        "reference": "{{item.city}}",
    }
    samples = [
        Sample("q", '{"city": "Oslo"}', 5, {"city": "Oslo"}),
        Sample("q", '{"city": "Rome"}', 5, {"city": "Oslo"}),
        Sample("q", "Oslo", 1, {"city": "Oslo"}),
    ]  # not JSON: output_json is null
    total, per = _reward(g, name="city").score(samples)
    # the third: {{sample.output_json.city}} walks into null -> a grader error -> 0, counted
    assert total == [1.0, 0.0, 0.0]
    assert per["city_errors"] == [0.0, 0.0, 1.0]


def test_text_similarity_fuzzy_match_by_hand_and_weight():
    g = {
        "type": "text_similarity",
        "name": "fuzzy",
        "evaluation_metric": "fuzzy_match",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
    }
    rs = _reward(g, weight=0.5)
    # fuzzy_match = 2 * LCS_chars / (len a + len b):
    #   "abcd" vs "abce": LCS "abc" = 3 -> 6 / 8 = 0.75
    #   "ab"   vs "abcd": LCS "ab"  = 2 -> 4 / 6 = 2/3
    #   "xyz"  vs "abcd": LCS 0       -> 0
    samples = [
        Sample("q", t, 1, {"answer": ref}) for t, ref in (("abcd", "abce"), ("ab", "abcd"), ("xyz", "abcd"))
    ]
    total, per = rs.score(samples)
    assert per["fuzzy"] == pytest.approx([0.75, 2 / 3, 0.0])
    assert total == pytest.approx([0.375, 1 / 3, 0.0])  # weight 0.5


def test_multi_formula_by_hand():
    g = {
        "type": "multi",
        "name": "combo",
        "calculate_output": "0.7 * exact + 0.3 * sim",
        "graders": {
            "exact": {
                "type": "string_check",
                "name": "e",
                "operation": "eq",
                "input": "{{sample.output_text}}",
                "reference": "{{item.answer}}",
            },
            "sim": {
                "type": "text_similarity",
                "name": "s",
                "evaluation_metric": "fuzzy_match",
                "input": "{{sample.output_text}}",
                "reference": "{{item.answer}}",
            },
        },
    }
    samples = [Sample("q", "abcd", 1, {"answer": "abcd"}), Sample("q", "abce", 1, {"answer": "abcd"})]
    # equal:    0.7 * 1 + 0.3 * 1    = 1.0
    # abce/abcd: 0.7 * 0 + 0.3 * 0.75 = 0.225   (LCS "abc": 2*3/8)
    total, _ = _reward(g).score(samples)
    assert total == pytest.approx([1.0, 0.225])


@pytest.mark.skipif(
    not available_backends(SandboxConfig())["bwrap"],
    reason="python graders run only inside bubblewrap, which does not work here (apt-get install bubblewrap)",
)
def test_python_grader_in_the_sandbox():
    source = (
        "def grade(sample, item):\n"
        "    words = sample['output_text'].split()\n"
        "    return len(words) / item['max_words'] if len(words) <= item['max_words'] else 0.0\n"
    )
    g = {"type": "python", "name": "brevity", "source": source}
    samples = [
        Sample("q", "one two", 2, {"max_words": 4}),  # 2/4 = 0.5
        Sample("q", "a b c d e", 5, {"max_words": 4}),  # over the limit -> 0
        Sample("q", "a b c d", 4, {"max_words": 4}),  # 4/4 = 1
        Sample("q", "x", 1, {}),
    ]  # KeyError -> error -> 0
    total, per = _reward(g).score(samples)
    assert total == [0.5, 0.0, 1.0, 0.0]
    assert per["brevity_errors"] == [0.0, 0.0, 0.0, 1.0]


def test_grader_errors_score_zero_and_are_logged(caplog):
    rs = _reward(EXACT)
    with caplog.at_level(logging.WARNING, logger="tunesmith"):
        total, per = rs.score([Sample("q", "42", 2, {"answer": "42"}), Sample("q", "42", 2, {})])
    assert total == [1.0, 0.0] and per["exact_answer_errors"] == [0.0, 1.0]
    assert "1 of 2 completions could not be graded" in caplog.text
    assert "item has no key 'answer'" in caplog.text


def test_grader_from_a_file_and_required_fields(tmp_path):
    f = tmp_path / "exact.json"
    f.write_text(json.dumps({"name": "from_file", "grader": EXACT}))
    rs = _reward(str(f))
    assert rs.names == ["from_file"]
    y = tmp_path / "exact.yaml"
    y.write_text(
        "type: string_check\nname: y\noperation: ne\ninput: '{{sample.output_text}}'\n"
        "reference: '{{item.gold.text}}'\n"
    )
    assert _reward(str(y)).score([Sample("q", "a", 1, {"gold": {"text": "b"}})])[0] == [1.0]
    # the data check reads the top-level item keys the templates name (prompt/messages are given)
    specs = [
        Spec(type="grader", grader=str(y)),
        Spec(type="grader", grader={**EXACT, "reference": "{{item.messages[0].content}}"}),
    ]
    assert required_fields(specs) == {"gold": "grpo.rewards[0] (grader)"}


def _load(rewards):
    """A GRPO config through every check a run makes before it starts (tunesmith.methods.validate:
    the config layer's, then GRPO's own, which parses the graders)."""
    validate(
        load_config(
            {"model": "m", "method": "grpo", "data": {"train": "t.jsonl"}, "grpo": {"rewards": rewards}}
        )
    )


def test_bad_grader_is_a_config_error_naming_the_field(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"'grpo\.rewards\[1\]\.grader\.operation': unknown "
        r"operation 'regex'",
    ):
        _load([{"type": "length"}, {"type": "grader", "grader": {**EXACT, "operation": "regex"}}])
    with pytest.raises(ConfigError, match=r"'grpo\.rewards\[0\]\.grader' is required"):
        _load([{"type": "grader"}])
    f = tmp_path / "g.json"
    f.write_text(json.dumps({**EXACT, "input": "{{output_text}}"}))
    with pytest.raises(ConfigError, match=r"grpo\.rewards\[0\]\.grader \(.*g\.json\)\.input'"):
        _load([{"type": "grader", "grader": str(f)}])
    with pytest.raises(ConfigError, match="grader file not found"):
        _load([{"type": "grader", "grader": str(tmp_path / "missing.json")}])
    with pytest.raises(ConfigError, match=r"'grpo\.rewards\[0\]\.model' does not apply"):
        build_rewards([Spec(type="grader", grader=EXACT, model="x")], max_new_tokens=8)


def test_model_graders_need_a_local_judge(tmp_path):
    judge = {
        "type": "score_model",
        "name": "judge",
        "model": "gpt-4o",
        "input": [{"role": "user", "content": "{{sample.output_text}}"}],
    }
    with pytest.raises(
        ConfigError,
        match=r"'grpo\.rewards\[0\]\.grader\.model': 'gpt-4o' is not "
        r"a local model; map it .*grpo\.rewards\[0\]\.judge_model",
    ):
        _load([{"type": "grader", "grader": judge}])
    with pytest.raises(ConfigError, match="is not a model folder or .gguf file"):
        _load([{"type": "grader", "grader": judge, "judge_model": str(tmp_path / "nope")}])
    with pytest.raises(ConfigError, match=r"judge_model' maps \['gpt-5'\]"):
        _load([{"type": "grader", "grader": judge, "judge_model": {"gpt-5": str(tmp_path)}}])
    with pytest.raises(ConfigError, match="no grader here is a score_model or label_model"):
        _load([{"type": "grader", "grader": EXACT, "judge_model": str(tmp_path)}])
    image = {
        **judge,
        "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "{{item.url}}"}]}],
    }
    with pytest.raises(
        ConfigError,
        match=r"input\[0\]\.content\[0\]\.type': input_image needs a "
        "multimodal judge",
    ):
        _load([{"type": "grader", "grader": image, "judge_model": str(tmp_path)}])


def test_a_grader_that_can_never_run_fails_at_start():
    broken = {"type": "python", "name": "p", "source": "def grade(sample, item)\n    return 1\n"}
    if available_backends(SandboxConfig())["bwrap"]:
        with pytest.raises(
            ConfigError, match=r"'grpo\.rewards\[0\]\.grader\.source': .*SyntaxError: expected ':' \(line 1\)"
        ):
            _reward(broken)
    cosine = {
        "type": "text_similarity",
        "name": "c",
        "evaluation_metric": "cosine",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
    }
    with pytest.raises(ConfigError, match="cosine similarity needs an embedding function"):
        _reward(cosine)


def test_python_grader_without_bubblewrap_is_a_config_error(monkeypatch, tmp_path):
    # A machine without bubblewrap: nothing named bwrap on PATH (the real probe then fails).
    monkeypatch.setenv("PATH", str(tmp_path))
    g = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1.0\n"}
    with pytest.raises(
        ConfigError,
        match=r"'grpo\.rewards\[0\]\.grader': cannot run a python "
        "grader here: .*bubblewrap",
    ):
        _reward(g)


def test_the_judge_loads_in_the_runs_dtype():
    import torch

    from tunesmith.graders import LocalJudge  # rewards.grader hands it train.dtype

    def _torch_dtype(name, device):
        return LocalJudge({}, device=device or "cpu", dtype=name).torch_dtype

    assert _torch_dtype("auto", "cpu") is torch.float32  # auto on a CPU: fp32
    assert _torch_dtype("bf16", None) is torch.bfloat16 and _torch_dtype("fp16", "cpu") is torch.float16
