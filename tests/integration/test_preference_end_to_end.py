"""DPO family, KTO and reward models end to end on a tiny Llama: they learn a preference
(the chosen answer starts with 'yes,', the rejected with 'no,') that held-out pairs share."""

from __future__ import annotations

import json

import factory
import pytest
import torch

import tunesmith


@pytest.fixture(scope="module")
def pref_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("pref")
    return (
        str(factory.write_jsonl(d / "train.jsonl", factory.preference_pairs(96, seed=1))),
        str(factory.write_jsonl(d / "eval.jsonl", factory.preference_pairs(24, seed=2))),
        str(factory.write_jsonl(d / "kto.jsonl", factory.kto_rows(96, seed=1))),
    )


def _cfg(model, train, evals, out, method="dpo", adapter="lora", steps=16, **pref):
    return {
        "model": str(model),
        "method": method,
        "data": {"train": train, "eval": evals},
        "adapter": {"type": adapter, "r": 8, "alpha": 16, "dropout": 0.0},
        "preference": pref,
        "train": {
            "max_steps": steps,
            "batch_size": 8,
            "max_length": 64,
            "lr": 5e-3 if adapter != "none" else 1e-3,
            "save_every": 0,
            "eval_every": steps,
            "eval_at_start": True,
            "progress": "none",
        },
        "output_dir": str(out),
    }


def _evals(out):
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return rows, [r for r in rows if "eval_loss" in r]


@pytest.mark.parametrize("loss", ["sigmoid", "simpo", "orpo"])
def test_dpo_family_learns_the_preference(tiny_model_dir, pref_data, tmp_path, loss):
    out = tmp_path / loss
    extra = {"beta": 2.0, "gamma": 0.5} if loss == "simpo" else {}
    cfg = _cfg(tiny_model_dir, pref_data[0], pref_data[1], out, loss=loss, **extra)
    cfg["train"].update(progress="lines", log_every=8)
    tunesmith.train(cfg)
    rows, (first, last) = _evals(out)
    # The console (train.log) says when it evaluates and shows DPO's own signals; the run
    # report labels the pair loss and pair accuracy as such.
    log = (out / "train.log").read_text()
    assert "step 0: evaluating the held-out set" in log
    assert "| acc " in log and "| margin " in log and "eval_acc " in log
    labels = json.loads((out / "report.json").read_text())["labels"]
    assert labels["eval_accuracy"][0] == "eval pair accuracy (chosen reward > rejected)"
    assert "nats" not in labels["eval_loss"][0]
    if loss == "sigmoid":
        # the reference is the adapter-disabled model: at step 0 policy == reference exactly
        assert first["eval_rewards_chosen"] == 0.0 and first["eval_accuracy"] == 0.5
    assert first["eval_accuracy"] <= 0.75
    assert last["eval_accuracy"] >= 0.9 and last["eval_margin"] > 0
    assert last["eval_loss"] < first["eval_loss"]
    for key in ("loss", "accuracy", "margin", "logps_chosen", "logps_rejected", "rewards_chosen"):
        assert key in rows[1], key
    assert (out / "final" / "adapter_model.safetensors").is_file()


def test_full_finetune_precomputes_and_reuses_reference(tiny_model_dir, pref_data, tmp_path):
    from tunesmith.run import prepare

    cache = tmp_path / "refcache"
    cfg = _cfg(
        tiny_model_dir,
        pref_data[0],
        pref_data[1],
        tmp_path / "full",
        adapter="none",
        steps=6,
        reference_cache=str(cache),
    )
    tunesmith.train(cfg)
    info = json.loads((tmp_path / "full" / "run.json").read_text())
    assert info["data"]["train"]["reference"]["computed"] == 96 + 24
    (cache_file,) = cache.glob("reference-logps-*.json")
    assert len(json.loads(cache_file.read_text())) == 120
    _, (first, last) = _evals(tmp_path / "full")
    assert first["eval_margin"] == pytest.approx(0.0, abs=1e-5) and last["eval_margin"] > 0
    # a second run over the same data and base reads every reference from the cache
    again = prepare(
        _cfg(
            tiny_model_dir,
            pref_data[0],
            pref_data[1],
            tmp_path / "again",
            adapter="none",
            reference_cache=str(cache),
        )
    )
    assert again.info["data"]["train"]["reference"] == {"cached": 120, "computed": 0, "file": str(cache_file)}


def test_kto_learns_from_unpaired_labels(tiny_model_dir, pref_data, tmp_path):
    out = tmp_path / "kto"
    tunesmith.train(_cfg(tiny_model_dir, pref_data[2], None, out, method="kto"))
    rows, (first, last) = _evals(out)
    assert first["eval_accuracy"] == 0.5 and last["eval_accuracy"] >= 0.9
    assert last["eval_rewards_desirable"] > 0 > last["eval_rewards_undesirable"]
    assert all("kl" in r for r in rows[1:])  # the reference point is logged every step


def test_reward_model_learns_and_scores_like_training(tiny_model_dir, pref_data, tmp_path):
    from tunesmith.data.pair_collate import collate_pairs
    from tunesmith.data.preference import PairRenderer, load_pairs, render_pairs
    from tunesmith.models.pair_forward import pair_hidden
    from tunesmith.models.reward_model import load_reward_model, rewards_at, score

    out = tmp_path / "rm"
    tunesmith.train(_cfg(tiny_model_dir, pref_data[0], pref_data[1], out, method="reward"))
    _, (first, last) = _evals(out)
    assert last["eval_accuracy"] >= 0.9 and last["eval_loss"] < first["eval_loss"]
    cfg = json.loads((out / "final" / "adapter_config.json").read_text())
    assert cfg["task_type"] == "SEQ_CLS" and "score" in cfg["modules_to_save"]

    model, tok = load_reward_model(str(out / "final"))
    pairs = [json.loads(x) for x in open(pref_data[1])]
    chosen = score(model, tok, [p["prompt"] + p["chosen"] for p in pairs])
    rejected = score(model, tok, [p["prompt"] + p["rejected"] for p in pairs])
    assert sum(c > r for c, r in zip(chosen, rejected)) / len(pairs) >= 0.9
    # score() reads the reward on exactly the tokens and position training used
    from tunesmith.models.attention import register

    model.set_attn_implementation(register())
    items, _ = render_pairs(PairRenderer(tok, 64), load_pairs([pref_data[1]]))
    with torch.no_grad():
        batch = collate_pairs(items[:4])
        trained = rewards_at(model, pair_hidden(model, batch), batch.last_positions)
    assert trained[0::2].tolist() == pytest.approx(chosen[:4], abs=1e-4)
    assert trained[1::2].tolist() == pytest.approx(rejected[:4], abs=1e-4)

    # the CLI writes each row back with its rewards and reports the pairwise accuracy
    from tunesmith.cli import main

    scored = tmp_path / "scored.jsonl"
    assert main(["reward", "score", str(out / "final"), pref_data[1], "--out", str(scored)]) == 0
    rows = [json.loads(x) for x in scored.read_text().splitlines()]
    assert [r["reward_chosen"] for r in rows] == pytest.approx(chosen, abs=1e-5)
    assert rows[0]["chosen"] == pairs[0]["chosen"]
    chats = factory.write_jsonl(
        tmp_path / "chats.jsonl", [{"messages": pairs[0]["prompt"] + pairs[0]["chosen"]}]
    )
    assert main(["reward", "score", str(out / "final"), str(chats), "--out", str(scored)]) == 0
    assert json.loads(scored.read_text())["reward"] == pytest.approx(chosen[0], abs=1e-5)
    assert (
        main(
            [
                "reward",
                "score",
                str(out / "final"),
                str(factory.write_jsonl(tmp_path / "t.jsonl", [{"text": "x"}])),
            ]
        )
        == 2
    )


def test_full_reward_model_saves_a_sequence_classifier(tiny_model_dir, pref_data, tmp_path):
    from tunesmith.models.reward_model import load_reward_model, score

    out = tmp_path / "rm-full"
    tunesmith.train(
        _cfg(tiny_model_dir, pref_data[0], pref_data[1], out, method="reward", adapter="none", steps=2)
    )
    cfg = json.loads((out / "final" / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForSequenceClassification"] and cfg["pad_token_id"] is not None
    model, tok = load_reward_model(str(out / "final"))
    assert (
        len(score(model, tok, [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}]]))
        == 1
    )


def test_packed_rows_score_like_unpacked(tiny_model_dir, pref_data, tmp_path):
    """packing: true groups several pair rows per unit; each pair is still attended on its own,
    so every held-out metric equals the unpacked run's."""
    from tunesmith.run import prepare

    results = {}
    for packing in (True, False):
        cfg = _cfg(tiny_model_dir, pref_data[0], pref_data[1], tmp_path / f"p{packing}")
        cfg["train"].update(packing=packing, max_tokens_per_forward=10_000)
        run = prepare(cfg)
        # LoRA B = 0 makes policy == reference; perturb the adapter identically in both runs
        torch.manual_seed(0)
        with torch.no_grad():
            for _, p in sorted(run.model.named_parameters()):
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * 0.05)
        results[packing] = (len(run.trainer.eval_units), run.trainer.evaluate())
    (n_packed, packed), (n_plain, plain) = results[True], results[False]
    assert n_packed < n_plain == 24
    assert packed["eval_tokens"] == plain["eval_tokens"] == 24 and abs(plain["eval_margin"]) > 1e-4
    for key, value in plain.items():
        assert packed[key] == pytest.approx(value, abs=1e-5), key


def test_dpo_from_an_earlier_adapter_uses_it_as_the_reference(tiny_model_dir, pref_data, tmp_path):
    """DPO after SFT (``adapter.init_from``): the reference is the model training starts from,
    base + that adapter, not the adapter-disabled base. So at step 0 policy == reference and
    every implicit reward is exactly 0 (eval loss ln 2), although the adapter moves the log-probs."""
    from tunesmith.config import load_config, validate
    from tunesmith.errors import ConfigError

    first = tmp_path / "first"
    tunesmith.train(_cfg(tiny_model_dir, pref_data[0], pref_data[1], first, steps=4))
    cfg = _cfg(tiny_model_dir, pref_data[0], pref_data[1], tmp_path / "second", steps=2)
    cfg["adapter"]["init_from"] = str(first / "final")
    tunesmith.train(cfg)
    _, (start, _) = _evals(tmp_path / "second")
    assert start["eval_rewards_chosen"] == 0.0 and start["eval_margin"] == 0.0
    assert start["eval_loss"] == pytest.approx(0.693147, abs=1e-6)  # -log σ(0)
    _, (_, trained) = _evals(first)
    # the adapter-disabled base would not be this reference: the first run's adapter had moved it
    assert trained["eval_margin"] != pytest.approx(0.0, abs=1e-3)
    assert len(list((tmp_path / "second").glob("reference-logps-*.json"))) == 1

    cfg["preference"]["precompute_reference"] = False
    with pytest.raises(ConfigError, match="adapter.init_from"):
        validate(load_config(cfg))
