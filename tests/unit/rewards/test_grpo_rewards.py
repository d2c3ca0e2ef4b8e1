"""GRPO reward functions: built-ins by hand, Python callables, reward models, weighted sums."""

from __future__ import annotations

import json

import pytest
import torch

from tunesmith.config.schema import GrpoRewardConfig as Spec
from tunesmith.errors import ConfigError, TunesmithError
from tunesmith.rewards import Sample, build_rewards, required_fields
from tunesmith.rewards.builtin import overlong_penalty, parse_json_completion


def _score(spec: Spec, completions: list[str], extra: dict | None = None, n_tokens: int = 3) -> list[float]:
    rs = build_rewards([spec], max_new_tokens=16)
    total, per = rs.score([Sample("q", c, n_tokens, dict(extra or {})) for c in completions])
    assert per[rs.names[0]] == total  # weight 1
    return total


def test_exact_match_whole_completion_and_extracted():
    spec = Spec(type="exact_match")  # field "answer"
    assert _score(spec, ["42", "  42 \n", "43", "42."], {"answer": "42"}) == [1, 1, 0, 0]
    assert _score(spec, ["7"], {"answer": 7}) == [1]  # numbers compare as text
    assert _score(spec, ["b", "c"], {"answer": ["a", "b"]}) == [1, 0]  # any of a list
    extract = Spec(type="exact_match", field="gold", pattern=r"answer:\s*(\w+)", ignore_case=True)
    got = _score(extract, ["so the Answer: Paris.", "answer: rome", "Paris"], {"gold": "paris"})
    assert got == [1, 0, 0]  # no match -> 0


def test_regex_search_full_match_and_case():
    assert _score(Spec(type="regex", pattern=r"\d"), ["abc 7", "abc"]) == [1, 0]
    fmt = Spec(type="regex", pattern=r"<think>.*</think>\s*\w+", full_match=True)
    assert _score(fmt, ["<think>a\nb</think> yes", "x <think>a</think> yes"]) == [1, 0]  # DOTALL
    assert _score(Spec(type="regex", pattern="yes", ignore_case=True), ["YES"]) == [1]


def test_json_schema_inline_file_and_per_example(tmp_path):
    schema = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
    inline = Spec(type="json_schema", schema=schema)
    texts = ['{"name": "x"}', '{"name": 3}', "not json", '```json\n{"name": "y"}\n```']
    assert _score(inline, texts) == [1, 0, 0, 1]
    f = tmp_path / "s.json"
    f.write_text(json.dumps(schema))
    assert _score(Spec(type="json_schema", schema=str(f)), texts) == [1, 0, 0, 1]
    assert _score(Spec(type="json_schema"), ["[1, 2]", "{oops"]) == [1, 0]  # JSON validity only
    per_example = Spec(type="json_schema", field="schema")
    assert _score(per_example, ['{"a": 1}', "{}"], {"schema": {"required": ["a"]}}) == [1, 0]
    with pytest.raises(ConfigError, match="not a valid JSON schema"):
        build_rewards([Spec(type="json_schema", schema={"type": 12})], max_new_tokens=8)
    with pytest.raises(ConfigError, match="file not found"):
        build_rewards([Spec(type="json_schema", schema=str(tmp_path / "missing.json"))], max_new_tokens=8)
    assert parse_json_completion(" ```\n[1]\n``` ") == [1]


def test_overlong_penalty_by_hand():
    # DAPO eq. 13 with L_max 8, L_cache 4: free up to 4 tokens, then (4 - L) / 4, -1 past 8.
    assert [overlong_penalty(n, 8, 4) for n in (1, 4, 5, 6, 8, 9)] == [0, 0, -0.25, -0.5, -1, -1]
    # Defaults: L_max = grpo.max_new_tokens (16), L_cache = 16 // 4 = 4 -> 14 tokens: (12 - 14) / 4.
    assert _score(Spec(type="length"), ["x"], n_tokens=14) == [-0.5]
    with pytest.raises(ConfigError, match="cache_tokens"):
        build_rewards([Spec(type="length", max_tokens=4, cache_tokens=5)], max_new_tokens=8)


REWARD_FILE = """
def digits(prompt, completion, target, **other):
    return sum(ch == target for ch in completion) / max(len(completion), 1)

def only_needed(prompt, completion, target):
    return 1.0 if target in completion else 0.0

def broken(prompt, completion, **kw):
    raise KeyError("boom")

def not_a_number(prompt, completion, **kw):
    return "high"
"""


def test_python_callable_gets_prompt_completion_and_fields(tmp_path, monkeypatch):
    path = tmp_path / "my_rewards.py"
    path.write_text(REWARD_FILE)
    spec = Spec(type="python", function=f"{path}:digits")
    assert build_rewards([spec, spec], max_new_tokens=8).names == ["digits", "digits_2"]
    assert _score(spec, ["7a77", "none"], {"target": "7", "unused": 1}) == [0.75, 0.0]
    # A function without **kwargs receives only the fields it names.
    assert _score(Spec(type="python", function=f"{path}:only_needed"), ["x7"], {"target": "7", "id": 3}) == [
        1.0
    ]
    with pytest.raises(TunesmithError, match="broken failed.*KeyError"):
        _score(Spec(type="python", function=f"{path}:broken"), ["x"])
    with pytest.raises(TunesmithError, match="finite numbers"):
        _score(Spec(type="python", function=f"{path}:not_a_number"), ["x"])
    with pytest.raises(ConfigError, match="has no function 'nope'"):
        build_rewards([Spec(type="python", function=f"{path}:nope")], max_new_tokens=8)
    with pytest.raises(ConfigError, match="file not found"):
        build_rewards([Spec(type="python", function=f"{tmp_path}/absent.py:f")], max_new_tokens=8)
    with pytest.raises(ConfigError, match="could not load"):
        build_rewards([Spec(type="python", function="tunesmith_no_such_module:f")], max_new_tokens=8)
    with pytest.raises(ConfigError, match="must look like"):
        build_rewards([Spec(type="python", function="no_colon")], max_new_tokens=8)
    # An importable module works too.
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _score(Spec(type="python", function="my_rewards:digits"), ["77"], {"target": "7"}) == [1.0]


def test_weighted_sum_names_and_key_checks():
    rs = build_rewards(
        [
            Spec(type="regex", pattern="a"),
            Spec(type="regex", pattern="b", weight=0.5),
            Spec(type="length", weight=-2.0, name="len"),
        ],
        max_new_tokens=8,
    )
    assert rs.names == ["regex", "regex_2", "len"]
    total, per = rs.score([Sample("q", "ab", 7, {}), Sample("q", "b", 1, {})])
    # "ab", 7 tokens: 1 + 0.5 * 1 - 2 * ((6 - 7) / 2) = 1.5 + 1 = 2.5 (L_max 8, L_cache 2).
    # "b", 1 token: 0 + 0.5 + 0 = 0.5.
    assert total == [2.5, 0.5]
    assert per == {"regex": [1, 0], "regex_2": [1, 1], "len": [-0.5, 0.0]}
    with pytest.raises(ConfigError, match=r"grpo.rewards\[0\].pattern' does not apply"):
        build_rewards([Spec(type="json_schema", pattern="x")], max_new_tokens=8)
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        build_rewards([Spec(type="regex", pattern="(")], max_new_tokens=8)
    with pytest.raises(ConfigError, match="reserved"):
        build_rewards([Spec(type="regex", pattern="a", name="std")], max_new_tokens=8)
    with pytest.raises(ConfigError, match="used twice"):
        build_rewards(
            [Spec(type="regex", pattern="a", name="x"), Spec(type="length", name="x")], max_new_tokens=8
        )
    assert required_fields(
        [Spec(type="exact_match"), Spec(type="json_schema", field="s"), Spec(type="regex", pattern="a")]
    ) == {"answer": "grpo.rewards[0] (exact_match)", "s": "grpo.rewards[1] (json_schema)"}


def test_reward_model_scores_prompt_plus_completion(tmp_path, tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForSequenceClassification

    from tunesmith.models.reward_model import score

    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    rm.save_pretrained(tmp_path / "rm")
    tiny_tokenizer.save_pretrained(tmp_path / "rm")
    rs = build_rewards([Spec(type="reward_model", model=str(tmp_path / "rm"))], max_new_tokens=8)
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    total, _ = rs.score([Sample("what color?", "blue.", 2, {}), Sample(chat, "hello", 2, {})])
    want = score(
        rm.eval(),
        tiny_tokenizer,
        [
            [{"role": "user", "content": "what color?"}, {"role": "assistant", "content": "blue."}],
            chat + [{"role": "assistant", "content": "hello"}],
        ],
    )
    assert total == pytest.approx(want, abs=1e-5)
    with pytest.raises(ConfigError, match=r"grpo.rewards\[0\].model"):
        build_rewards([Spec(type="reward_model", model=str(tiny_model_dir))], max_new_tokens=8)
