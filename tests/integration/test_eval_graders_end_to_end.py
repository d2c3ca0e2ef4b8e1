"""``tunesmith eval --grader``: OpenAI graders as eval scorers, on two tiny models.

The held-out file has OpenAI's reinforcement fine-tuning shape (``messages`` ending with the
user turn, plus fields the graders read as ``{{item.hint}}`` …). Each grader's
per-answer score is re-derived here from the answers the report recorded, and the comparison
numbers from those scores, so the whole path (item / sample namespaces, batching, report) is
checked against the graders' definitions.
"""

from __future__ import annotations

import json

import factory
import pytest

from tunesmith.cli import main
from tunesmith.graders.sandbox import SandboxConfig, available_backends

BWRAP = available_backends(SandboxConfig())["bwrap"]


@pytest.fixture(scope="module")
def second_model(tiny_model_dir, tiny_tokenizer, tmp_path_factory):
    """Another random tiny Llama (seed 1) with the same tokenizer: the model compared with."""
    path = tmp_path_factory.mktemp("llama-b")
    factory.build_model(path, "llama", vocab_size=len(tiny_tokenizer), seed=1)
    tiny_tokenizer.save_pretrained(path)
    return path


def _files(tmp_path):
    # hint: the colour's first letter, which the random tiny models' answers sometimes contain
    rows = [
        {
            "messages": [{"role": "user", "content": f"what color is the {thing}?"}],
            "answer": color,
            "hint": color[0],
        }
        for thing, color in sorted(factory.COLORS.items())
    ]
    data = factory.write_jsonl(tmp_path / "heldout.jsonl", rows)
    mentions = tmp_path / "mentions.json"
    mentions.write_text(
        json.dumps(
            {
                "type": "string_check",
                "name": "mentions",
                "operation": "ilike",
                "input": "{{sample.output_text}}",
                "reference": "{{item.hint}}",
            }
        )
    )
    words = tmp_path / "words.yaml"  # the {"name", "grader"} wrapper form, in YAML
    words.write_text(
        "name: words\ngrader:\n  type: python\n  name: w\n  source: |\n"
        "    def grade(sample, item):\n"
        "        return min(1.0, len(sample['output_text'].split()) / 4)\n"
    )
    judge = tmp_path / "judge.json"
    judge.write_text(
        json.dumps(
            {
                "type": "score_model",
                "name": "judge",
                "model": "house-judge",
                "range": [0, 10],
                "sampling_params": {"max_completions_tokens": 4},
                "input": [
                    {"role": "user", "content": "{{item.messages[0].content}} {{sample.output_text}} score?"}
                ],
            }
        )
    )
    return data, mentions, words, judge


def test_graders_score_answers_and_compare_models(tiny_model_dir, second_model, tmp_path, capsys):
    data, mentions, words, judge = _files(tmp_path)
    out = tmp_path / "report"
    graders = ["--grader", str(mentions), "--grader", str(judge)]
    if BWRAP:
        graders += ["--grader", str(words)]
    code = main(
        [
            "eval",
            str(tiny_model_dir),
            "--data",
            str(data),
            "--compare",
            str(second_model),
            *graders,
            "--judge-model",
            f"house-judge={tiny_model_dir}",
            "--max-new-tokens",
            "6",
            "--resamples",
            "200",
            "--out",
            str(out),
            "--threads",
            "1",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0, text
    assert "grader mentions" in text and "grader judge" in text
    report = json.loads((out / "report.json").read_text())
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    a, b = report["models"][0]["name"], report["models"][1]["name"]
    assert len(rows) == len(factory.COLORS)
    answers = {m: [r["answers"][m] for r in rows] for m in (a, b)}
    refs = [color[0] for _, color in sorted(factory.COLORS.items())]
    # string_check ilike: the reference, case-folded, is a substring of the case-folded answer
    expected = {
        m: [float(ref.casefold() in ans.casefold()) for ans, ref in zip(answers[m], refs)] for m in (a, b)
    }
    metrics = ["grader:mentions", "grader:judge"]
    if BWRAP:  # min(1, words / 4), as the python grader says
        metrics.append("grader:words")
        for m in (a, b):
            assert [r["scores"][m]["grader:words"] for r in rows] == pytest.approx(
                [min(1.0, len(ans.split()) / 4) for ans in answers[m]]
            )
    assert 0 < sum(expected[a] + expected[b]) < 2 * len(rows)  # a non-trivial check
    for m in (a, b):
        assert [r["scores"][m]["grader:mentions"] for r in rows] == expected[m]
        for metric in metrics:
            per = [r["scores"][m][metric] for r in rows]
            assert report["metrics"][m][metric]["value"] == pytest.approx(sum(per) / len(per))
            assert report["metrics"][m][metric]["n"] == len(rows)
        # the judge (a random tiny model) rarely answers a number in [0, 10]: those answers
        # score 0 with the reason kept, and the report's notes count them
        judged = [r["scores"][m]["grader:judge"] for r in rows]
        assert all(0.0 <= v <= 10.0 for v in judged)
        errors = [r.get("grader_errors", {}).get(m, {}).get("judge") for r in rows]
        assert all(v == 0.0 for v, e in zip(judged, errors) if e is not None)
        if any(errors):
            assert any(f"{m}: grader judge could not grade" in n for n in report["notes"])
    for metric in metrics:
        cmp = report["comparisons"][0]["metrics"][metric]
        va = [r["scores"][a][metric] for r in rows]
        vb = [r["scores"][b][metric] for r in rows]
        assert cmp["diff"] == pytest.approx((sum(va) - sum(vb)) / len(rows))
        assert cmp["win"] == sum(x > y for x, y in zip(va, vb))
        assert cmp["loss"] == sum(x < y for x, y in zip(va, vb))
        assert cmp["low"] <= cmp["diff"] <= cmp["high"]
    assert report["settings"]["graders"]["judge"] == {
        "type": "score_model",
        "judges": {"house-judge": str(tiny_model_dir)},
    }
    assert "grader mentions" in (out / "report.html").read_text()


def test_grader_mistakes_are_one_line_errors(tiny_model_dir, tmp_path, capsys):
    data, mentions, _, judge = _files(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "type": "string_check",
                "name": "x",
                "operation": "regex",
                "input": "{{sample.output_text}}",
                "reference": "a",
            }
        )
    )
    base = ["eval", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "o")]
    assert main([*base, "--grader", str(bad)]) == 2
    assert "bad.json).operation: unknown operation 'regex'" in capsys.readouterr().err
    assert main([*base, "--grader", str(judge)]) == 2
    assert (
        "'house-judge' is not a local model; map it to a local judge with --judge-model"
        in capsys.readouterr().err
    )
    assert main([*base, "--grader", str(mentions), "--judge-model", str(tiny_model_dir)]) == 2
    assert "no grader here is a score_model or label_model" in capsys.readouterr().err
    assert main([*base, "--grader", str(judge), "--judge-model", "a", "--judge-model", "b"]) == 2
    assert "give one PATH (for every model grader) or one or more NAME=PATH" in capsys.readouterr().err
    assert main([*base, "--grader", str(mentions), "--grader", str(mentions)]) == 2
    assert "another grader is also named 'mentions'" in capsys.readouterr().err
