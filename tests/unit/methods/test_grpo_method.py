"""GRPO method parts: config, prompt data validation, rollout sampling and log-probs, the step."""

from __future__ import annotations

import factory
import pytest
import torch

from tunesmith.config import load_config, validate
from tunesmith.config.schema import AdapterConfig
from tunesmith.engine.loop import Trainer
from tunesmith.engine.parts import MethodParts
from tunesmith.errors import CheckpointError, ConfigError, DataError
from tunesmith.losses.policy import clipped_policy_loss
from tunesmith.methods import grpo
from tunesmith.methods.grpo_rollout import completion_logprobs, sample_groups
from tunesmith.models.adapters import attach_adapter, unwrap
from tunesmith.models.attention import register
from tunesmith.models.generate import generation_mode
from tunesmith.models.load import load_causal_lm
from tunesmith.models.template import stop_token_ids


def _raw(tmp_path, **grpo_cfg):
    cfg = {
        "model": "m",
        "method": "grpo",
        "data": {"train": "t.jsonl"},
        "grpo": {"rewards": [{"type": "exact_match"}], **grpo_cfg},
    }
    return cfg


# -- config --------------------------------------------------------------------------------


def test_grpo_config_parses_reward_list_with_did_you_mean(tmp_path):
    cfg = load_config(_raw(tmp_path, group_size=4, rewards=[{"type": "regex", "pattern": "x", "weight": 2}]))
    validate(cfg)
    assert cfg.grpo.rewards[0].pattern == "x" and cfg.grpo.rewards[0].weight == 2.0
    with pytest.raises(
        ConfigError, match=r"unknown key 'grpo.rewards\[0\].patern'.*Did you mean 'grpo.rewards\[0\].pattern'"
    ):
        load_config(_raw(tmp_path, rewards=[{"type": "regex", "patern": "x"}]))
    with pytest.raises(
        ConfigError, match=r"grpo.rewards\[0\].type' = 'regx' is not one of.*Did you mean 'regex'"
    ):
        load_config(_raw(tmp_path, rewards=[{"type": "regx"}]))
    with pytest.raises(ConfigError, match=r"'grpo.rewards\[0\]' must be a mapping"):
        load_config(_raw(tmp_path, rewards=["regex"]))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"grpo.group_size": 1}, "group_size' must be >= 2"),
        ({"grpo.max_new_tokens": 2048}, "max_new_tokens' must be >= 1 and below"),
        ({"grpo.temperature": 0}, "temperature' must be > 0"),
        ({"grpo.beta": 0.1, "adapter.type": "none"}, "needs an adapter"),
        ({"grpo.rewards": []}, "'grpo.rewards' is required"),
        ({"grpo.rewards": [{"type": "python"}]}, r"'grpo.rewards\[0\].function' is required"),
        ({"grpo.iterations": 0}, r"'grpo.iterations' must be >= 1"),
        (
            {"grpo.iterations": 2, "train.save_every": 5},
            r"'train.save_every' \(5\) must be a multiple of 'grpo.iterations' \(2\)",
        ),
        (
            {"grpo.iterations": 3, "train.save_every": 3, "train.max_steps": 10},
            r"'train.max_steps' \(10\) must be a multiple of 'grpo.iterations' \(3\)",
        ),
    ],
)
def test_grpo_config_validation(tmp_path, change, message):
    overrides = [f"{k}={v}" for k, v in change.items()]
    cfg = load_config(_raw(tmp_path), overrides)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


# -- data ----------------------------------------------------------------------------------


def test_read_prompts_keeps_extra_fields(tmp_path):
    f = factory.write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"prompt": "2+2?", "answer": "4", "id": 1},
            {
                "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
                "answer": "x",
            },
        ],
    )
    rows = grpo.read_prompts(str(f), {"answer": "grpo.rewards[0] (exact_match)"})
    assert rows[0][0] == "2+2?" and rows[0][1] == {"answer": "4", "id": 1}
    assert rows[1][0][1] == {"role": "user", "content": "hi"}
    assert rows[1][2].source.endswith("p.jsonl:2")


@pytest.mark.parametrize(
    "rows, line, field, text",
    [
        ([{"prompt": "a", "answer": "1"}, {"prompt": "b"}], 2, "answer", "exact_match"),
        ([{"prompt": "a", "answer": "1"}, {"prompt": 3, "answer": "1"}], 2, "prompt", "string or an array"),
        ([{"prompt": "  ", "answer": "1"}], 1, "prompt", "empty"),
        (
            [
                {
                    "prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                    "answer": "1",
                }
            ],
            1,
            "prompt[1].role",
            "ends with an assistant",
        ),
        (
            [{"prompt": [{"role": "wizard", "content": "q"}], "answer": "1"}],
            1,
            "prompt[0].role",
            "role must be",
        ),
        (
            [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
            1,
            None,
            "OpenAI chat",
        ),
        ([{"prompt": "q", "completion": "a"}], 1, None, "'completion' field"),
        (
            [{"prompt": "a", "answer": "1"}, {"prompt": "b", "completion": "1"}],
            2,
            "completion",
            "prompt/completion",
        ),
    ],
)
def test_prompt_data_errors_name_file_line_field(tmp_path, rows, line, field, text):
    f = factory.write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError, match=text) as info:
        grpo.read_prompts(str(f), {"answer": "grpo.rewards[0] (exact_match)"})
    assert info.value.path == str(f) and info.value.line == line and info.value.field == field


def test_prepare_data_renders_prompts_and_drops_overlong(tmp_path, tiny_model_dir, tiny_tokenizer):
    long = " ".join(["water"] * 80)
    f = factory.write_jsonl(
        tmp_path / "p.jsonl", [{"prompt": "hello", "answer": "1"}, {"prompt": long, "answer": "1"}]
    )
    cfg = load_config(
        {
            "model": str(tiny_model_dir),
            "method": "grpo",
            "data": {"train": str(f), "eval_fraction": 0},
            "train": {"max_length": 48},
            "grpo": {"max_new_tokens": 8, "rewards": [{"type": "exact_match"}]},
        }
    )
    data = grpo.prepare_data(cfg, tiny_tokenizer)
    assert len(data.train) == 1 and data.train_units == [[0]] and data.stats["train"]["dropped_too_long"] == 1
    want = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello"}], tokenize=False, add_generation_prompt=True
    )
    assert tiny_tokenizer.decode(data.train[0].prompt_ids) == want
    assert data.train[0].extra == {"answer": "1"}


# -- rollout -------------------------------------------------------------------------------


@pytest.fixture()
def policy(tiny_model_dir):
    """The tiny Llama as training sets it up: varlen attention, LoRA, no KV cache by default."""
    model = load_causal_lm(str(tiny_model_dir))
    model.set_attn_implementation(register())
    model.config.use_cache = False
    return attach_adapter(model, AdapterConfig(r=4, alpha=8, dropout=0.0, targets=["q_proj", "v_proj"]))


def test_generation_mode_masks_left_padding_and_restores_training_setup(policy, tiny_tokenizer):
    hf = unwrap(policy)
    short = tiny_tokenizer("hello", add_special_tokens=False)["input_ids"]
    long = tiny_tokenizer("the kettle water is warm and the tea is hot", add_special_tokens=False)[
        "input_ids"
    ]
    pad = tiny_tokenizer.pad_token_id
    batch = torch.tensor([[pad] * (len(long) - len(short)) + short, long])
    attention = (torch.arange(len(long))[None] >= torch.tensor([[len(long) - len(short)], [0]])).long()
    kwargs = dict(do_sample=False, max_new_tokens=6, pad_token_id=pad, use_cache=True)
    policy.train()
    with generation_mode(policy):
        assert not policy.training and hf.config._attn_implementation == "sdpa"
        together = policy.generate(input_ids=batch, attention_mask=attention, **kwargs)[:, len(long) :]
        alone = policy.generate(input_ids=torch.tensor([short]), **kwargs)[:, len(short) :]
    # The padded row continues exactly as the prompt alone does: padding is masked out.
    assert together[0].tolist() == alone[0].tolist()
    assert policy.training and hf.config._attn_implementation == "tunesmith_varlen"


def test_sampling_is_the_full_softmax_at_the_temperature(policy, tiny_tokenizer):
    # The tiny random model's next-token distribution is close to uniform over 320 tokens, so a
    # top-k of 50 (transformers' default) would cut ~85 % of the mass. The empirical distribution
    # of 3000 samples must stay near softmax(logits / T): expected total variation ~0.13.
    prompt = tiny_tokenizer("the sun is", add_special_tokens=False)["input_ids"]
    torch.manual_seed(0)
    first = sample_groups(
        policy,
        [prompt],
        group_size=3000,
        max_new_tokens=1,
        temperature=0.5,
        top_p=1.0,
        stop_ids=[-1],
        pad_id=tiny_tokenizer.pad_token_id,
    )
    counts = torch.bincount(torch.tensor([c[0] for c in first]), minlength=len(tiny_tokenizer)).float()
    with torch.no_grad():
        policy.eval()
        logits = policy(input_ids=torch.tensor([prompt])).logits[0, -1].float()
    probs = torch.softmax(logits / 0.5, dim=-1)
    tv = 0.5 * (counts / counts.sum() - probs[: len(counts)]).abs().sum().item()
    assert tv < 0.25


def test_sample_groups_cut_at_the_stop_token_and_logprobs_match_a_plain_forward(
    policy, tiny_tokenizer, tiny_model_dir
):
    prompts = [tiny_tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("hi", "one two three four")]
    stops = stop_token_ids(tiny_tokenizer)
    torch.manual_seed(1)
    comps = sample_groups(
        policy,
        prompts,
        group_size=3,
        max_new_tokens=5,
        temperature=0.7,
        top_p=1.0,
        stop_ids=stops,
        pad_id=tiny_tokenizer.pad_token_id,
    )
    assert len(comps) == 6 and all(1 <= len(c) <= 5 for c in comps)
    assert all(t not in stops for c in comps for t in c[:-1])  # nothing after a stop token
    rows = [p for p in prompts for _ in range(3)]
    with torch.no_grad():
        logp, mask = completion_logprobs(policy, rows, comps, temperature=0.7, chunk_size=2)
    plain = load_causal_lm(str(tiny_model_dir))  # LoRA B = 0, so the base model is the policy
    for i, (p, c) in enumerate(zip(rows, comps)):
        with torch.no_grad():
            logits = plain(input_ids=torch.tensor([p + c])).logits[0].float() / 0.7
        want = torch.log_softmax(logits, -1)[len(p) - 1 : -1].gather(1, torch.tensor(c)[:, None])[:, 0]
        assert torch.allclose(logp[i, : len(c)], want, atol=1e-5)
        assert mask[i].sum().item() == len(c) and logp[i, len(c) :].abs().sum().item() == 0


def _step(policy, tiny_tokenizer, tmp_path, **grpo_cfg):
    cfg = load_config(
        {
            "model": "m",
            "method": "grpo",
            "data": {"train": "t"},
            "train": {"max_length": 64},
            "grpo": {
                "group_size": 4,
                "max_new_tokens": 6,
                "rewards": [{"type": "regex", "pattern": "e"}],
                **grpo_cfg,
            },
        }
    )
    parts = grpo.build(cfg, policy, tiny_tokenizer)
    items = [
        grpo.PromptItem(tiny_tokenizer(t, add_special_tokens=False)["input_ids"], t, {}, f"x:{i}")
        for i, t in enumerate(("hello there", "one two"))
    ]
    return parts, parts.collate(items)


def test_step_metrics_reference_and_eval_rng(policy, tiny_tokenizer, tmp_path):
    parts, batch = _step(policy, tiny_tokenizer, tmp_path, beta=0.1)
    assert parts.batch_count(batch) == 8
    policy.train()
    loss, m = parts.loss_fn(policy, batch)
    assert loss.requires_grad and m["completions"] == 8 and m["groups"] == 2
    # Fresh LoRA (B = 0): the policy is the reference, so the KL is exactly zero.
    assert m["kl"].item() == pytest.approx(0.0, abs=1e-6)
    assert m["reward_regex"] == m["reward"]
    loss.backward()
    assert any(p.grad is not None for n, p in policy.named_parameters() if "lora_B" in n)
    row = parts.summarize(m, 8)
    assert set(row) >= {"reward", "reward_std", "reward_regex", "kl", "completion_length", "clip_fraction"}
    assert row["clip_fraction"] == 0.0  # one pass per rollout: ratio 1, the clip never bites

    with torch.no_grad():  # a moved adapter makes the policy differ from the reference
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.add_(0.5)
    # Evaluation: seeded from the prompts, deterministic, training RNG untouched.
    policy.eval()
    before = torch.get_rng_state()
    with torch.no_grad():
        _, m1 = parts.loss_fn(policy, batch)
        _, m2 = parts.loss_fn(policy, batch)
    assert torch.equal(before, torch.get_rng_state())
    assert m1["reward"] == m2["reward"] and m1["completion_tokens"] == m2["completion_tokens"]
    assert m1["kl"].item() > 0
    assert batch.n_tokens > 8 * 2  # prompt + sampled tokens of the last pass


def test_full_fine_tuning_has_no_reference(tiny_model_dir, tiny_tokenizer, tmp_path):
    model = attach_adapter(load_causal_lm(str(tiny_model_dir)), AdapterConfig(type="none"))
    parts, batch = _step(model, tiny_tokenizer, tmp_path)
    _, m = parts.loss_fn(model, batch)
    assert "kl" not in m and "kl" not in parts.summarize(m, 8)


def test_iterations_one_and_save_every_multiples_are_valid(tmp_path):
    validate(load_config(_raw(tmp_path), ["grpo.iterations=2", "train.save_every=4", "train.max_steps=8"]))
    validate(load_config(_raw(tmp_path), ["grpo.iterations=3", "train.save_every=0"]))  # only at the end


# -- grpo.iterations (μ > 1): the engine re-feeds each window, the step re-uses its rollout ------


def test_batch_reuse_feeds_each_window_to_consecutive_steps(tmp_path):
    base = {"batch_size": 2, "grad_accum": 2, "epochs": 1.5, "seed": 3}
    items = list(range(10))

    def trainer(reuse, **train):
        parts = MethodParts(
            loss_fn=None, collate=list, batch_count=len, item_tokens=lambda i: 1, batch_reuse=reuse
        )
        c = load_config({"model": "m", "data": {"train": "t"}, "train": {**base, **train}}).train
        return Trainer(
            model=torch.nn.Linear(2, 2),
            parts=parts,
            items=items,
            units=[[i] for i in items],
            eval_items=[],
            eval_units=[],
            cfg=c,
            out_dir=tmp_path,
            device=torch.device("cpu"),
            dtype="fp32",
            state_extra={"seed": 3},
        )

    one, two = trainer(1), trainer(2)
    # 10 units / batch 2 = 5 micro-batches; 1.5 epochs x 5 / 2 per step = 3.75 -> 4 steps; x 2.
    assert one.total_steps == 4 and two.total_steps == 8
    for s in range(one.total_steps):
        assert two.window(2 * s) == two.window(2 * s + 1) == one.window(s)
    assert two.window(1) != two.window(2)
    # max_steps keeps meaning optimizer steps; the reuse factor is checked when resuming.
    assert trainer(2, max_steps=6).total_steps == 6
    assert one.state_extra == {"seed": 3} and two.state_extra == {"seed": 3, "batch_reuse": 2}
    checkpoint = two.save(2)  # a checkpoint of μ = 2 resumed with μ = 3 is refused
    with pytest.raises(CheckpointError, match="'batch_reuse' was 2 there but is 3 now"):
        trainer(3).restore(checkpoint)


def _floats(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items()}


def test_iterations_reuse_the_rollout_with_pi_old_from_its_first_use(policy, tiny_tokenizer, tmp_path):
    once, batch_once = _step(policy, tiny_tokenizer, tmp_path, beta=0.1)
    twice, batch = _step(policy, tiny_tokenizer, tmp_path, beta=0.1, iterations=2)
    assert once.batch_reuse == 1 and twice.batch_reuse == 2
    policy.train()
    torch.manual_seed(5)
    loss_once, m_once = once.loss_fn(policy, batch_once)
    torch.manual_seed(5)
    loss1, m1 = twice.loss_fn(policy, batch)
    # First use == today's (μ = 1) step, bit for bit: same samples, ratio exactly 1, no clip.
    assert loss1.item() == loss_once.item()
    assert _floats(m_once) == {k: v for k, v in _floats(m1).items() if k != "rollout_use"}
    assert m1["ratio"].item() == m1["completion_tokens"].item()
    assert m1["rollout_use"] == 8 and len(twice.loss_fn.cache) == 1  # 8 completions at use 1

    policy.eval()  # evaluation samples afresh and leaves the cached rollout alone
    with torch.no_grad():
        twice.loss_fn(policy, batch)
    policy.train()
    assert len(twice.loss_fn.cache) == 1

    loss1.backward()  # one optimizer step moves π_θ away from π_old
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=0.05)
    opt.step()
    opt.zero_grad()
    rollout = next(iter(twice.loss_fn.cache._entries.values()))
    rng = torch.get_rng_state()
    loss2, m2 = twice.loss_fn(policy, batch)
    assert torch.equal(rng, torch.get_rng_state())  # no sampling: the rollout was re-used
    assert len(twice.loss_fn.cache) == 0  # μ = 2 uses done: dropped
    assert m2["rollout_use"] == 16 and m2["reward"] == m1["reward"]
    assert m2["completion_tokens"] == m1["completion_tokens"]
    # The second use's loss is the clipped objective against the first use's log-probs.
    with torch.no_grad():
        logp, mask = completion_logprobs(policy, rollout.rows, rollout.completions, temperature=1.0)
    want, _ = clipped_policy_loss(
        logp, rollout.old_logp, rollout.advantages, mask, beta=0.1, ref_logp=rollout.ref_logp
    )
    assert loss2.item() == pytest.approx(want.item(), abs=1e-6)
    ratio = (logp - rollout.old_logp).exp()[mask.bool()]
    assert m2["ratio"].item() == pytest.approx(ratio.sum().item(), rel=1e-6)
    assert (ratio - 1).abs().max().item() > 0.2  # the ratio left the clip range [0.8, 1.2] ...
    assert m2["clipped_low"].item() + m2["clipped_high"].item() > 0  # ... and the clip acted
    row = twice.summarize(m2, 8)
    assert row["rollout_use"] == 2.0 and row["clip_fraction"] > 0 and row["ratio_mean"] != 1.0

    _, m3 = twice.loss_fn(policy, batch)  # third call: a new window's first use samples again
    assert not torch.equal(rng, torch.get_rng_state())
    assert m3["rollout_use"] == 8 and m3["ratio"].item() == m3["completion_tokens"].item()
