"""tinker-cookbook's own supervised loop, unmodified, against a local tunesmith server.

This is the cookbook's ``sl_basic`` recipe configuration with the local-file dataset builder
its source documents (``FromConversationFileBuilder`` on a JSONL of ``{"messages": [...]}``)
instead of the Hub's no_robots, run by ``tinker_cookbook.supervised.train.main``. The
tokenizer is registered through the cookbook's ``register_tokenizer`` hook and the ChatML
renderer through ``register_renderer`` (``tunesmith.tinker.cookbook.register_local_model``), so
nothing is downloaded.

    python examples/tinker/sl_cookbook.py                       # starts a server itself
    python examples/tinker/sl_cookbook.py --base-url http://127.0.0.1:8000 --api-key tml-…

It prints the cookbook's ``train_mean_nll`` for every step, then first -> last and steps/s,
then the final sampler checkpoint's greedy answers to four questions about the taught facts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import local_server

DATA = Path(__file__).with_name("zephyr_support.jsonl")


def build_config(
    model_name: str,
    model_path: str,
    log_path: str,
    data: str = str(DATA),
    batch_size: int = 8,
    epochs: int = 3,
    learning_rate: float = 1e-3,
    lora_rank: int = 8,
    max_steps: int | None = None,
    base_url: str | None = None,
):
    """The cookbook's ``supervised.train.Config`` for ``data`` (sl_basic's settings, scaled to a
    135M model on CPU: a small batch, a higher learning rate, rank 8)."""
    from tinker_cookbook.renderers import TrainOnWhat
    from tinker_cookbook.supervised import train
    from tinker_cookbook.supervised.data import FromConversationFileBuilder
    from tinker_cookbook.supervised.types import ChatDatasetBuilderCommonConfig

    from tunesmith.tinker.cookbook import register_local_model

    renderer_name = register_local_model(model_name, model_path)
    common = ChatDatasetBuilderCommonConfig(
        model_name_for_tokenizer=model_name,
        renderer_name=renderer_name,
        max_length=512,
        batch_size=batch_size,
        train_on_what=TrainOnWhat.ALL_ASSISTANT_MESSAGES,
    )
    return train.Config(
        log_path=log_path,
        model_name=model_name,
        recipe_name="recipe_sl_basic",
        renderer_name=renderer_name,
        dataset_builder=FromConversationFileBuilder(common_config=common, file_path=str(data)),
        learning_rate=learning_rate,
        lr_schedule="linear",
        num_epochs=epochs,
        lora_rank=lora_rank,
        max_steps=max_steps,
        save_every=0,
        eval_every=0,
        base_url=base_url,
    )


def run(config) -> dict:
    """Run the cookbook's loop; ``{"nll": [per step], "seconds": wall time of the loop,
    "steps_per_s"}`` read back from the metrics.jsonl the cookbook writes."""
    from tinker_cookbook.supervised import train

    start = time.perf_counter()
    asyncio.run(train.main(config))
    seconds = time.perf_counter() - start
    rows = [json.loads(line) for line in Path(config.log_path, "metrics.jsonl").read_text().splitlines()]
    nll = [r["train_mean_nll"] for r in sorted(rows, key=lambda r: r["step"]) if "train_mean_nll" in r]
    return {"nll": nll, "seconds": seconds, "steps_per_s": len(nll) / seconds}


QUESTIONS = [
    "How long is the warranty of the Zephyr Q3?",
    "How much does the Zephyr Q3 cost?",
    "Which colours does the Zephyr Q3 come in?",
    "How do I reset my Zephyr Q3?",
]


def ask(config, questions=QUESTIONS, max_tokens: int = 24) -> list[str]:
    """Greedy answers of the loop's final sampler checkpoint (the ``sampler_path`` of the last
    line of the cookbook's checkpoints.jsonl), rendered with the same renderer."""
    import tinker
    from tinker_cookbook import renderers
    from tinker_cookbook.tokenizer_utils import get_tokenizer

    last = Path(config.log_path, "checkpoints.jsonl").read_text().splitlines()[-1]
    renderer = renderers.get_renderer(config.renderer_name, get_tokenizer(config.model_name))
    params = tinker.SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=renderer.get_stop_sequences())
    with tinker.ServiceClient(base_url=config.base_url) as service:
        sampler = service.create_sampling_client(model_path=json.loads(last)["sampler_path"])
        futures = [
            sampler.sample(renderer.build_generation_prompt([{"role": "user", "content": q}]), 1, params)
            for q in questions
        ]
        answers = [renderer.parse_response(f.result().sequences[0].tokens)[0] for f in futures]
    return [renderers.get_text_content(a) for a in answers]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    local_server.add_server_arguments(p)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=None)
    args = p.parse_args()
    with local_server.tinker_server(args):
        config = build_config(
            args.model,
            args.model_path,
            local_server.log_path(args, "sl-cookbook"),
            data=args.data,
            batch_size=args.batch_size,
            epochs=args.epochs,
            learning_rate=args.lr,
            lora_rank=args.rank,
            max_steps=args.max_steps,
        )
        out = run(config)
        answers = ask(config)
    for step, nll in enumerate(out["nll"]):
        print(f"step {step:3d}  train_mean_nll {nll:.4f}")
    print(
        f"loss {out['nll'][0]:.4f} -> {out['nll'][-1]:.4f} over {len(out['nll'])} steps, "
        f"{out['steps_per_s']:.3f} steps/s ({out['seconds']:.1f} s, cookbook log {config.log_path})"
    )
    for question, answer in zip(QUESTIONS, answers):
        print(f"Q: {question}\nA: {answer}")


if __name__ == "__main__":
    main()
