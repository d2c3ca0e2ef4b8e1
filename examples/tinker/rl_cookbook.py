"""tinker-cookbook's own RL loop, unmodified, against a local tunesmith server.

``tinker_cookbook.rl.train.main`` (the ``rl_basic`` recipe's loop: sample a group of answers per
prompt from a sampler snapshot of the weights, score them, centre the rewards per group,
``forward_backward`` with the ``importance_sampling`` loss, ``optim_step``) on a verifiable task
built from the cookbook's own RL abstractions: a ``ProblemEnv`` per question ("What is the
capital of Japan?"), grouped by ``ProblemGroupBuilder``, served by an ``RLDataset``. The reward
is the cookbook's ProblemEnv reward ``correct + format_coef * (format - 1)`` with
``format_coef`` 1: correct = the answer names the capital, format = the answer ends with
``<|im_end|>`` within ``max_tokens`` (10) — "answer correctly and briefly", from -1 to 1. At
temperature 1 base SmolLM2-135M-Instruct names the capital about half the time and rambles past
10 tokens most of the time, so the reward has room to rise.

    python examples/tinker/rl_cookbook.py                       # starts a server itself
    python examples/tinker/rl_cookbook.py --base-url http://127.0.0.1:8000 --api-key tml-…

It prints the mean reward of every step, then first -> last and steps/s.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path

import chz
import local_server
from tinker_cookbook import renderers
from tinker_cookbook.rl.problem_env import ProblemEnv, ProblemGroupBuilder
from tinker_cookbook.rl.types import EnvGroupBuilder, RLDataset, RLDatasetBuilder
from tinker_cookbook.tokenizer_utils import get_tokenizer

CAPITALS = [  # countries whose capital base SmolLM2 names in about half of its answers
    ("Japan", "Tokyo"),
    ("Russia", "Moscow"),
    ("China", "Beijing"),
    ("England", "London"),
    ("Greece", "Athens"),
    ("Germany", "Berlin"),
    ("Canada", "Ottawa"),
    ("Thailand", "Bangkok"),
]


class CapitalEnv(ProblemEnv):
    """One question; correct when the answer names the capital (any case)."""

    def __init__(self, renderer: renderers.Renderer, country: str, capital: str, format_coef: float):
        super().__init__(renderer, format_coef=format_coef)
        self.country, self.capital = country, capital

    def get_question(self) -> str:
        return f"What is the capital of {self.country}?"

    def check_answer(self, sample_str: str) -> bool:
        return self.capital.lower() in sample_str.lower()

    def check_format(self, sample_str: str) -> bool:
        return sample_str.strip() != ""

    def get_reference_answer(self) -> str:
        return self.capital


class CapitalsDataset(RLDataset):
    """``batch_size`` questions per batch, each asked ``group_size`` times (one group)."""

    def __init__(self, renderer, batch_size: int, group_size: int, format_coef: float, seed: int):
        self.pairs = list(CAPITALS)
        random.Random(seed).shuffle(self.pairs)
        self.renderer, self.batch_size, self.group_size = renderer, batch_size, group_size
        self.format_coef = format_coef

    def get_batch(self, index: int) -> Sequence[EnvGroupBuilder]:
        pairs = self.pairs[index * self.batch_size : (index + 1) * self.batch_size]
        return [
            ProblemGroupBuilder(
                env_thunk=functools.partial(CapitalEnv, self.renderer, country, capital, self.format_coef),
                num_envs=self.group_size,
                dataset_name="capitals",
            )
            for country, capital in pairs
        ]

    def __len__(self) -> int:
        return len(self.pairs) // self.batch_size


@chz.chz
class CapitalsBuilder(RLDatasetBuilder):
    batch_size: int
    group_size: int
    renderer_name: str
    model_name_for_tokenizer: str
    format_coef: float = 1.0
    seed: int = 0

    async def __call__(self) -> tuple[RLDataset, RLDataset | None]:
        tokenizer = get_tokenizer(self.model_name_for_tokenizer)
        renderer = renderers.get_renderer(self.renderer_name, tokenizer)
        return CapitalsDataset(renderer, self.batch_size, self.group_size, self.format_coef, self.seed), None


def build_config(
    model_name: str,
    model_path: str,
    log_path: str,
    batch_size: int = 2,
    group_size: int = 4,
    steps: int = 8,
    learning_rate: float = 1e-3,
    lora_rank: int = 8,
    max_tokens: int = 10,
    loss_fn: str = "importance_sampling",
    base_url: str | None = None,
):
    """The cookbook's ``rl.train.Config`` (rl_basic's loop) for ``steps`` steps of
    ``batch_size`` questions x ``group_size`` answers (the dataset is cycled as needed)."""
    from tinker_cookbook.rl import train

    from tunesmith.tinker.cookbook import register_local_model

    renderer_name = register_local_model(model_name, model_path)
    per_epoch = len(CAPITALS) // batch_size
    return train.Config(
        learning_rate=learning_rate,
        dataset_builder=CapitalsBuilder(
            batch_size=batch_size,
            group_size=group_size,
            renderer_name=renderer_name,
            model_name_for_tokenizer=model_name,
        ),
        model_name=model_name,
        recipe_name="recipe_rl_basic",
        renderer_name=renderer_name,
        max_tokens=max_tokens,
        log_path=log_path,
        eval_every=0,
        save_every=0,
        loss_fn=loss_fn,
        lora_rank=lora_rank,
        num_epochs=-(-steps // per_epoch),
        max_steps=steps,
        num_groups_to_log=0,
        base_url=base_url,
    )


def run(config) -> dict:
    """Run the cookbook's loop; ``{"reward", "correct", "format"}`` (per step: the mean reward,
    the fraction naming the capital, the fraction ending in time) plus ``"seconds"`` and
    ``"steps_per_s"``, read back from the metrics.jsonl it writes."""

    from tinker_cookbook.rl import train

    start = time.perf_counter()
    asyncio.run(train.main(config))
    seconds = time.perf_counter() - start
    rows = [json.loads(line) for line in Path(config.log_path, "metrics.jsonl").read_text().splitlines()]
    rows = sorted((r for r in rows if "env/all/reward/total" in r), key=lambda r: r["step"])
    reward = [r["env/all/reward/total"] for r in rows]
    correct = [r.get("env/all/correct") for r in rows]
    brief = [r.get("env/all/format") for r in rows]
    return {
        "reward": reward,
        "correct": correct,
        "format": brief,
        "seconds": seconds,
        "steps_per_s": len(reward) / seconds,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    local_server.add_server_arguments(p)
    p.add_argument("--batch-size", type=int, default=2, help="questions per step")
    p.add_argument("--group-size", type=int, default=4, help="answers per question")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=10)
    p.add_argument(
        "--loss-fn", default="importance_sampling", choices=["importance_sampling", "ppo", "cispo"]
    )
    args = p.parse_args()
    with local_server.tinker_server(args):
        config = build_config(
            args.model,
            args.model_path,
            local_server.log_path(args, "rl-cookbook"),
            batch_size=args.batch_size,
            group_size=args.group_size,
            steps=args.steps,
            learning_rate=args.lr,
            lora_rank=args.rank,
            max_tokens=args.max_tokens,
            loss_fn=args.loss_fn,
        )
        out = run(config)
    for step, (reward, correct, brief) in enumerate(zip(out["reward"], out["correct"], out["format"])):
        print(f"step {step:3d}  mean reward {reward:+.3f}  correct {correct:.3f}  format {brief:.3f}")
    print(
        f"reward {out['reward'][0]:+.3f} -> {out['reward'][-1]:+.3f} over {len(out['reward'])} steps, "
        f"{out['steps_per_s']:.3f} steps/s ({out['seconds']:.1f} s, cookbook log {config.log_path})"
    )


if __name__ == "__main__":
    main()
