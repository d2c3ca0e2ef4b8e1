"""Method ``distill``: config, vocabulary check, teacher loading, the packed loss against an
unpacked reference, chunking, the top-k cache, on-policy passes, generate / eval commands."""

from __future__ import annotations

import json
import math

import factory
import pytest
import torch

import tunesmith
from tunesmith.cli import main
from tunesmith.config import load_config, validate
from tunesmith.config.load import config_to_dict, dump_config
from tunesmith.config.schema import DistillConfig
from tunesmith.data.formats import load_examples
from tunesmith.data.render import Renderer, render_all
from tunesmith.errors import CheckpointError, ConfigError, DataError, ModelError
from tunesmith.losses.distill import distill_loss
from tunesmith.methods import distill as dm
from tunesmith.methods.distill_cache import cached_topk
from tunesmith.methods.distill_generate import read_prompts
from tunesmith.methods.distill_teacher import attention, check_same_vocabulary, load_teacher, resolve_teacher


def _cfg(**distill):
    return load_config(
        {
            "model": "m",
            "method": "distill",
            "data": {"train": "t.jsonl"},
            "distill": {"teacher": "T", **distill},
        }
    )


# -- config -------------------------------------------------------------------------------------


def test_lambda_is_written_lambda_in_yaml(tmp_path):
    cfg = _cfg(mode="on_policy", **{"lambda": 0.25})
    assert cfg.distill.lambda_ == 0.25
    validate(cfg)
    assert (
        config_to_dict(cfg)["distill"]["lambda"] == 0.25 and "lambda_" not in config_to_dict(cfg)["distill"]
    )
    dump_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert load_config(cfg).distill.lambda_ == 0.25  # RunConfig -> dict -> RunConfig
    with pytest.raises(ConfigError, match="Did you mean 'distill.lambda'"):
        _cfg(lamda=0.1)


@pytest.mark.parametrize(
    "distill,message",
    [
        ({"teacher": ""}, "'distill.teacher' is required"),
        ({"alpha": 1.0}, "use method: sft"),
        ({"beta": 1.5}, "'distill.beta' must be in"),
        ({"lambda": -0.1}, "'distill.lambda' must be in"),
        ({"temperature": 0}, "'distill.temperature' must be > 0"),
        ({"mode": "on_policy", "cache_top_k": 8}, "needs distill.mode: logits"),
        ({"divergence": "jsdd"}, "Did you mean 'jsd'"),
    ],
)
def test_config_errors(distill, message):
    with pytest.raises(ConfigError, match=message):
        validate(_cfg(**distill))


# -- teacher ------------------------------------------------------------------------------------


def test_vocabulary_mismatch_names_first_tokens_and_suggests_sequence_level(
    tmp_path, tiny_tokenizer, tiny_model_dir, color_data
):
    other = factory.build_tokenizer(tmp_path / "other", vocab_size=300, extra_special=["<|x|>"])
    with pytest.raises(ConfigError) as err:
        check_same_vocabulary(tiny_tokenizer, other, "student", "teacher")
    text = str(err.value)
    assert (
        "differ: id " in text and "teacher '" in text and "distill generate" in text and "method: sft" in text
    )
    # prepare_data checks it before rendering anything.
    factory.build_model(tmp_path / "other", "llama", vocab_size=len(other))
    cfg = load_config(
        {
            "model": str(tiny_model_dir),
            "method": "distill",
            "data": {"train": str(color_data[0])},
            "distill": {"teacher": str(tmp_path / "other")},
        }
    )
    with pytest.raises(ConfigError, match="tokenizer"):
        dm.prepare_data(cfg, tiny_tokenizer)


@pytest.fixture(scope="module")
def adapter_run(tmp_path_factory, tiny_model_dir):
    """A run directory whose final/ holds a (random, non-zero) LoRA adapter over the tiny Llama."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = tmp_path_factory.mktemp("teacher-run")
    torch.manual_seed(0)
    peft = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False),
    )
    peft.save_pretrained(run / "final")
    return run


def test_teacher_base_plus_adapter_matches_peft(adapter_run, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base, adapter = resolve_teacher(str(tiny_model_dir), str(adapter_run))
    assert (base, adapter) == (str(tiny_model_dir), str(adapter_run / "final"))
    assert resolve_teacher(str(adapter_run), None) == (str(tiny_model_dir), str(adapter_run / "final"))
    teacher = load_teacher(base, adapter, torch.device("cpu"))
    assert not any(p.requires_grad for p in teacher.parameters())
    ids = torch.tensor([[5, 9, 40, 77, 3, 120]])
    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter
    ).eval()
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad(), attention(teacher, "stock"):
        got, want, raw = (
            teacher(input_ids=ids).logits,
            reference(input_ids=ids).logits,
            plain(input_ids=ids).logits,
        )
    assert (got - want).abs().max() < 1e-4 and (got - raw).abs().max() > 1e-3
    with pytest.raises(ModelError, match="adapter_config.json"):
        resolve_teacher(str(tiny_model_dir), str(tiny_model_dir))


# -- loss on packed batches ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def parts(tmp_path_factory, tiny_tokenizer, tiny_model_dir, color_data):
    """(student, teacher, tokenizer, items): a smaller random student and the tiny Llama teacher."""
    d = tmp_path_factory.mktemp("student")
    factory.build_model(
        d,
        "llama",
        vocab_size=len(tiny_tokenizer),
        seed=3,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    from tunesmith.models.load import load_causal_lm

    student = load_causal_lm(str(d))
    teacher = load_teacher(str(tiny_model_dir), None, torch.device("cpu"))
    rendered, _ = render_all(Renderer(tiny_tokenizer, max_length=128), load_examples(color_data[1])[:6])
    return student, teacher, tiny_tokenizer, [dm._item(r) for r in rendered]


def _reference(student, teacher, items, **kw):
    """Unpacked: each example through the stock HF forward, logits at its supervised positions."""
    total = 0.0
    for it in items:
        ids = torch.tensor([it.input_ids])
        pos = [i - 1 for i in range(1, len(ids[0])) if it.loss_mask[i]]
        s = student(input_ids=ids).logits[0, pos]
        with torch.no_grad():
            t = teacher(input_ids=ids).logits[0, pos]
        total = total + distill_loss(s, ids[0, [p + 1 for p in pos]], teacher_logits=t, **kw)[0]
    return total


@pytest.mark.parametrize("kind", ["forward_kl", "jsd"])
def test_packed_loss_matches_unpacked_reference_and_chunking(parts, kind):
    student, teacher, tok, items = parts
    cfg = DistillConfig(teacher="-", alpha=0.3, temperature=2.0, divergence=kind, beta=0.3)
    batch = dm.collate_distill(items)
    grads = []
    for chunk in (1024, 7):  # 7 < N: chunks recomputed in backward (checkpoint)
        student.zero_grad()
        with attention(student):
            loss, sums = dm.DistillLoss(cfg, teacher, len(tok), tok, chunk)(student, batch)
        loss.backward()
        grads.append(student.lm_head.weight.grad.clone())
    student.zero_grad()
    with attention(student, "stock"):
        ref = _reference(student, teacher, items, alpha=0.3, temperature=2.0, kind=kind, beta=0.3)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-4)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    assert sums["ce_n"] == batch.n_targets
    assert loss.item() == pytest.approx(0.3 * sums["ce"] + 0.7 * sums["divergence"], rel=1e-5)


def test_topk_cache_matches_on_the_fly_and_is_reused(parts, tmp_path):
    student, teacher, tok, items = parts
    cfg = DistillConfig(teacher="-", alpha=0.0, temperature=1.5)
    common = dict(cache_dir=tmp_path, teacher_fp="fp", temperature=1.5, vocab=len(tok))
    rows = cached_topk(items, k=len(tok), get_teacher=lambda: teacher, **common)
    assert [r[0].shape[0] for r in rows] == [sum(it.loss_mask[1:]) for it in items]
    cached_items = [
        dm.DistillItem(it.input_ids, it.loss_mask, it.source, it.prompt_len, *r) for it, r in zip(items, rows)
    ]
    loss_fn = dm.DistillLoss(cfg, teacher, len(tok), tok)
    with torch.no_grad(), attention(student):
        on_the_fly, _ = loss_fn(student, dm.collate_distill(items))
        cached, _ = loss_fn(student, dm.collate_distill(cached_items))
    # k = V: the tail bucket is empty, so the cached divergence is the full one. Measured with
    # the current dependency set (tokenizers 0.23, transformers 5.25): 1.5e-4 relative apart,
    # whether the teacher runs packed or one example per pass (cause not yet found).
    assert cached.item() == pytest.approx(on_the_fly.item(), rel=5e-4)

    def no_teacher():
        raise AssertionError("a warm cache must not load the teacher")

    again = cached_topk(items, k=len(tok), get_teacher=no_teacher, **common)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(rows, again))
    files = list(tmp_path.glob("topk-*.safetensors"))
    assert len(files) == 1
    # Another k (or teacher, data, T) is another file; a damaged file is reported, not trusted.
    small = cached_topk(items, k=4, get_teacher=lambda: teacher, **common)
    assert small[0][0].shape[1] == 4 and len(list(tmp_path.glob("topk-*.safetensors"))) == 2
    files[0].write_bytes(files[0].read_bytes()[:100])
    with pytest.raises(CheckpointError, match="delete it to recompute"):
        cached_topk(items, k=len(tok), get_teacher=no_teacher, **common)


def test_on_policy_pass_scores_student_samples(parts):
    student, teacher, tok, items = parts
    cfg = DistillConfig(teacher="-", mode="on_policy", lambda_=1.0, alpha=0.5, max_new_tokens=5)
    batch = dm.collate_distill(items[:3])
    loss_fn = dm.DistillLoss(cfg, teacher, len(tok), tok)
    student.train()
    torch.manual_seed(0)
    with attention(student):
        loss, sums = loss_fn(student, batch)
        loss.backward()
        torch.manual_seed(0)
        again, _ = loss_fn(student, batch)
    assert math.isfinite(loss.item()) and loss.item() > 0 and student.lm_head.weight.grad.abs().sum() > 0
    assert again.item() == pytest.approx(loss.item(), rel=1e-6)  # sampling follows the seeded RNG
    assert sums["on_policy"] == batch.n_targets and sums["ce"] == 0.0 and sums["ce_n"] == 0
    # Eval mode never samples: the data pass.
    student.eval()
    with torch.no_grad(), attention(student):
        _, eval_sums = loss_fn(student, batch)
    assert eval_sums["on_policy"] == 0 and eval_sums["ce_n"] == batch.n_targets
    student.train()
    assert dm.summarize({"ce": 6.0, "ce_n": 3, "divergence": 8.0, "agree": 2.0, "on_policy": 1}, 4) == {
        "divergence": 2.0,
        "agreement": 0.5,
        "ce": 2.0,
        "on_policy": 0.25,
    }


def test_on_policy_training_run(tmp_path, tiny_model_dir, color_data):
    result = tunesmith.train(
        {
            "model": str(tiny_model_dir),
            "method": "distill",
            "output_dir": str(tmp_path / "run"),
            "data": {"train": str(color_data[1]), "eval_fraction": 0.2},
            "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
            "distill": {
                "teacher": str(tiny_model_dir),
                "mode": "on_policy",
                "lambda": 0.5,
                "max_new_tokens": 4,
                "divergence": "jsd",
            },
            "train": {
                "max_steps": 3,
                "batch_size": 4,
                "max_length": 64,
                "save_every": 0,
                "eval_every": 0,
                "progress": "none",
            },
        }
    )
    rows = result.history
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in (
        "loss",
        "divergence",
        "agreement",
        "on_policy",
        "eval_loss",
        "eval_divergence",
        "eval_agreement",
    ):
        assert key in rows[-1], key
    assert "eval_ppl" not in rows[-1]
    # The teacher is the student's own base: on data passes the divergence starts at ~0.
    assert rows[0]["divergence"] < 1e-3 or rows[0]["on_policy"] > 0


# -- generate / eval commands -------------------------------------------------------------------


def test_read_prompts_from_several_formats(tmp_path):
    chat = factory.write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "old"}]},
            {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]},
        ],
    )
    assert read_prompts(str(chat)) == [
        [{"role": "user", "content": "hi"}],
        [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
    ]
    alpaca = factory.write_jsonl(tmp_path / "a.jsonl", [{"instruction": "do", "input": "x", "output": "y"}])
    assert read_prompts(str(alpaca)) == [[{"role": "user", "content": "do\n\nx"}]]
    pairs = factory.write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    with pytest.raises(DataError, match=r"p.jsonl, line 1: .*no single prompt"):
        read_prompts(str(pairs))


def test_distill_generate_and_eval_commands(tmp_path, tiny_model_dir, color_data, capsys):
    prompts = factory.write_jsonl(
        tmp_path / "prompts.jsonl", [{"prompt": f"what color is the {t}?"} for t in ("sky", "sun", "snow")]
    )
    out = tmp_path / "answers.jsonl"
    assert (
        main(
            [
                "distill",
                "generate",
                "--teacher",
                str(tiny_model_dir),
                "--prompts",
                str(prompts),
                "--out",
                str(out),
                "--max-new-tokens",
                "6",
                "--temperature",
                "0.8",
                "--seed",
                "3",
                "--samples",
                "2",
            ]
        )
        == 0
    )
    meta = json.loads((tmp_path / "answers.jsonl.generation.json").read_text())
    assert meta["sampling"] == {
        "max_new_tokens": 6,
        "temperature": 0.8,
        "top_p": 1.0,
        "seed": 3,
        "samples_per_prompt": 2,
        "system": None,
    }
    assert meta["written"] + meta["skipped_empty"] == 6 and meta["teacher"] == str(tiny_model_dir)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == meta["written"]
    for row in rows:
        assert (
            row["messages"][0]["content"].startswith("what color")
            and row["messages"][-1]["role"] == "assistant"
        )
    if rows:
        assert len(load_examples(out, expect="sft")) == len(rows)  # trainable with method: sft
    capsys.readouterr()
    assert (
        main(
            [
                "distill",
                "eval",
                "--student",
                str(tiny_model_dir),
                "--teacher",
                str(tiny_model_dir),
                "--data",
                str(color_data[1]),
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    # The model against itself: no divergence, full agreement.
    assert abs(report["kl"]) < 1e-5 and report["agreement"] == 1.0 and report["positions"] > 0


def test_4bit_teacher_scores_close_to_full_precision(parts, tiny_model_dir):
    pytest.importorskip("bitsandbytes")
    student, teacher, tok, items = parts
    q = load_teacher(str(tiny_model_dir), None, torch.device("cpu"), load_in_4bit=True)
    assert any("4bit" in type(m).__name__ for m in q.modules())
    cfg = DistillConfig(teacher="-", alpha=0.0)
    batch = dm.collate_distill(items)
    with torch.no_grad(), attention(student):
        full, _ = dm.DistillLoss(cfg, teacher, len(tok), tok)(student, batch)
        quantised, _ = dm.DistillLoss(cfg, q, len(tok), tok)(student, batch)
    assert quantised.item() == pytest.approx(full.item(), rel=0.05)
