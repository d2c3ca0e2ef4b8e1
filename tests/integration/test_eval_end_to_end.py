"""`tunesmith eval` end to end: a short SFT on a fact-recall task, then base vs tuned.

The task (tests/factory.color_chats): eight facts "what color is the X?" -> "the X is C.";
held-out questions ask about the same facts. A full fine-tune of the tiny random Llama learns
them in 120 steps (~15 s on one core), so exact match rises from 0 and the paired bootstrap
interval of the difference lies above 0.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess

import factory
import pytest

import tunesmith
from tunesmith.eval.evaluate import run_eval
from tunesmith.eval.runner import EvalOptions


@pytest.fixture(scope="module")
def fact_run(tiny_model_dir, color_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("fact-run")
    cfg = {
        "model": str(tiny_model_dir),
        "data": {"train": str(color_data[0]), "eval": str(color_data[1])},
        "adapter": {"type": "none"},
        "train": {
            "max_steps": 120,
            "batch_size": 8,
            "max_length": 128,
            "lr": 3e-3,
            "warmup_steps": 0,
            "save_every": 60,
            "eval_every": 60,
            "eval_at_start": True,
            "eval_generate": 8,
            "progress": "none",
        },
        "output_dir": str(out),
    }
    result = tunesmith.train(cfg)
    return out, result


@pytest.fixture(scope="module")
def evaluated(fact_run, color_data, tmp_path_factory):
    out, _ = fact_run
    report_dir = tmp_path_factory.mktemp("eval-report")
    report = run_eval(
        str(out),
        str(color_data[1]),
        compare_with=["base", "step-120"],
        options=EvalOptions(max_new_tokens=24, n_resamples=1000),
        out_dir=report_dir,
    )
    return report, report_dir


def test_exact_match_rises_with_a_positive_interval(evaluated):
    report, _ = evaluated
    tuned, base = report["metrics"]["final"], report["metrics"]["base"]
    assert base["exact_match"]["value"] == 0.0
    assert tuned["exact_match"]["value"] >= 0.5
    vs_base = report["comparisons"][0]
    assert vs_base["baseline"] == "base"
    em = vs_base["metrics"]["exact_match"]
    assert em["low"] > 0 and em["diff"] == pytest.approx(tuned["exact_match"]["value"])
    assert em["win"] >= 12 and em["loss"] == 0 and em["win"] + em["tie"] == 24
    assert vs_base["metrics"]["loss"]["high"] < 0  # held-out loss fell, interval below 0
    assert tuned["token_accuracy"]["value"] > base["token_accuracy"]["value"]


def test_likelihood_matches_the_trainers_eval_and_the_last_checkpoint(evaluated, fact_run):
    report, _ = evaluated
    _, result = fact_run
    # Same rendering, same supervised tokens, same model: the same held-out loss as training logged.
    assert report["metrics"]["final"]["loss"]["value"] == pytest.approx(result.eval_loss, rel=1e-4)
    # The step-120 checkpoint holds the final weights: every metric ties on every example.
    same = report["comparisons"][1]
    assert same["baseline"] == "step-000120"
    for metric, d in same["metrics"].items():
        assert abs(d["diff"]) < 1e-4, metric
        if metric not in ("loss", "perplexity"):
            assert d["win"] == d["loss"] == 0, metric


def test_report_files(evaluated):
    report, report_dir = evaluated
    saved = json.loads((report_dir / "report.json").read_text())
    assert saved["metrics"]["final"]["exact_match"] == report["metrics"]["final"]["exact_match"]
    assert saved["settings"]["seed"] == 0 and saved["settings"]["decoding"] == "greedy"
    assert saved["training"]["eval_steps"] == [0, 60, 120]
    page = (report_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3  # training curves + two bar charts
    assert "http://" not in page and "https://" not in page  # self-contained
    img = page.split("data:image/png;base64,", 1)[1].split("'", 1)[0]
    assert base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Largest changes: final vs base" in page
    h = saved["highlights"][0]
    assert h["metric"] and h["improvements"] and not h["regressions"]
    rows = [json.loads(x) for x in (report_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and set(rows[0]["answers"]) == {"final", "base", "step-000120"}


def test_eval_generate_during_training_and_end_of_run_report(fact_run):
    out, _ = fact_run
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in evals] == [0, 60, 120]
    assert all("eval_gen_exact_match" in r and "eval_gen_rouge_l" in r for r in evals)
    assert evals[0]["eval_gen_exact_match"] == 0.0 and evals[-1]["eval_gen_rouge_l"] > 0.5
    gens = [json.loads(x) for x in (out / "eval_generations.jsonl").read_text().splitlines()]
    assert len(gens) == 3 * 8 and {g["step"] for g in gens} == {0, 60, 120}
    run_report = json.loads((out / "report.json").read_text())
    assert [m["name"] for m in run_report["models"]] == ["step 120", "step 0"]
    cmp = run_report["comparisons"][0]["metrics"]
    assert cmp["eval_loss"]["diff"] < 0 and cmp["rouge_l"]["low"] > 0
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_batched_generation_equals_one_at_a_time(fact_run, color_data):
    from tunesmith.eval.data import load_eval_data
    from tunesmith.eval.models import load_eval_model, load_eval_tokenizer, resolve_spec, resolve_target
    from tunesmith.models.generate import generate_ids, prompt_token_ids

    out, _ = fact_run
    ctx = resolve_target(str(out))
    spec = resolve_spec("final", ctx)
    tok = load_eval_tokenizer(ctx, spec)
    model = load_eval_model(spec, ctx, "cpu")
    prompts = [prompt_token_ids(tok, it.prompt) for it in load_eval_data(str(color_data[1])).items[:8]]
    assert len({len(p) for p in prompts}) > 1  # mixed lengths, so the batch is left-padded
    together = generate_ids(model, tok, prompts, max_new_tokens=16)
    alone = [generate_ids(model, tok, [p], max_new_tokens=16)[0] for p in prompts]
    assert together == alone
    assert all(r["stopped"] for r in together)  # every reply ended at the end-of-turn token


def test_preference_pairs_implicit_reward_accuracy(fact_run, tmp_path):
    out, _ = fact_run
    rng = random.Random(0)
    colors = sorted(set(factory.COLORS.values()))
    rows = []
    for thing, color in sorted(factory.COLORS.items()):
        wrong = rng.choice([c for c in colors if c != color])
        rows.append(
            {
                "prompt": f"what color is the {thing}?",
                "chosen": f"the {thing} is {color}.",
                "rejected": f"the {thing} is {wrong}.",
            }
        )
    pairs = factory.write_jsonl(tmp_path / "pairs.jsonl", rows)
    report = run_eval(
        str(out),
        str(pairs),
        compare_with=["base"],
        out_dir=tmp_path / "r",
        options=EvalOptions(n_resamples=500),
    )
    tuned, base = report["metrics"]["final"], report["metrics"]["base"]
    # 8 pairs; the tiny model knows most facts after 120 steps (a random model scores ~0.5)
    assert tuned["reward_accuracy"]["value"] >= 0.75 and tuned["logp_pref_accuracy"]["value"] >= 0.75
    assert report["comparisons"][0]["metrics"]["logp_pref_accuracy"]["n"] == 8
    assert tuned["reward_margin"]["value"] > 0
    assert "reward_accuracy" not in base  # the base is the reference: its implicit reward is 0


def test_cli_eval_prints_the_table_and_reports_user_errors(fact_run, color_data, tmp_path, capsys):
    from tunesmith.cli import main

    out, _ = fact_run
    code = main(
        [
            "eval",
            str(out),
            "--data",
            str(color_data[1]),
            "--compare",
            "base",
            "--limit",
            "6",
            "--max-new-tokens",
            "16",
            "--resamples",
            "200",
            "--out",
            str(tmp_path / "cli"),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0 and "exact match" in text and "final - base" in text
    assert (tmp_path / "cli" / "report.html").is_file()
    assert main(["eval", str(out), "--compare", "step-999"]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err


def test_report_renders_in_headless_chromium(evaluated, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs Debian's package in CI)")
    from matplotlib import image

    _, report_dir = evaluated
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,1600",
            f"--screenshot={shot}",
            (report_dir / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = image.imread(str(shot))[..., :3]  # [H, W, 3] floats in 0..1
    ink = (pixels.min(axis=-1) < 0.9).mean()  # share of pixels that are not (near) white
    colours = len({tuple(p) for p in (pixels[::8, ::8].reshape(-1, 3) * 255).astype(int).tolist()})
    assert ink > 0.02 and colours > 20, (ink, colours)


def test_explicit_reward_model_scores_pairs_and_replies(fact_run, tiny_tokenizer, tmp_path):
    pytest.importorskip("tunesmith.models.reward_model")
    import torch
    from transformers import AutoModelForSequenceClassification

    from tunesmith.models.reward_model import load_reward_model, score

    out, _ = fact_run
    rm_dir = tmp_path / "rm"
    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_config(
        factory.model_config(
            "llama", len(tiny_tokenizer), num_labels=1, pad_token_id=tiny_tokenizer.pad_token_id
        )
    )
    rm.save_pretrained(rm_dir, safe_serialization=True)
    tiny_tokenizer.save_pretrained(rm_dir)
    rows = [
        {"prompt": f"what color is the {t}?", "chosen": f"the {t} is {c}.", "rejected": f"the {t} is grey."}
        for t, c in sorted(factory.COLORS.items())
    ]
    pairs = factory.write_jsonl(tmp_path / "pairs.jsonl", rows)
    report = run_eval(
        str(out),
        str(pairs),
        reward_model=str(rm_dir),
        out_dir=tmp_path / "r",
        options=EvalOptions(n_resamples=200),
    )
    # The reported accuracy is the reward model's own ranking of the pairs.
    model, tok = load_reward_model(str(rm_dir))
    convs = [
        [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r[k]}]
        for r in rows
        for k in ("chosen", "rejected")
    ]
    rewards = score(model, tok, convs)
    expected = sum(c > r for c, r in zip(rewards[0::2], rewards[1::2])) / len(rows)
    acc = report["reward_model"]["pairwise_accuracy"]
    assert acc["n"] == 8 and acc["value"] == pytest.approx(expected)
