"""``tunesmith generate`` and ``tunesmith chat``: replies from a model, adapter or run folder."""

from __future__ import annotations

import sys

from .compute import add_threads_argument
from .options import add_sampling_arguments, sampling_options


def _cmd_generate(args) -> int:
    from ..models.generate import generate, load_for_inference
    from ..progress import TaskProgress

    model, tok = load_for_inference(args.model, args.adapter)
    prompts = args.prompt or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    with TaskProgress("generate", len(prompts), "prompts") as bar:
        replies = generate(
            model, tok, prompts, system=args.system, progress=bar.advance, **sampling_options(args)
        )
    for text in replies:
        print(text)
    return 0


def _cmd_chat(args) -> int:
    from ..models.generate import generate, load_for_inference

    model, tok = load_for_inference(args.model, args.adapter)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    print("chatting; an empty line or Ctrl-D quits.")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            break
        if not line:
            break
        messages.append({"role": "user", "content": line})
        (reply,) = generate(model, tok, [messages], **sampling_options(args))
        print(f"assistant> {reply}")
        messages.append({"role": "assistant", "content": reply})
    return 0


def _add_sampling(p) -> None:
    p.add_argument("--model", required=True, help="model folder, adapter folder or run directory")
    p.add_argument("--adapter", help="LoRA adapter folder applied over --model")
    p.add_argument("--system", help="system prompt")
    add_sampling_arguments(p, max_new_tokens=128)
    add_threads_argument(p, "generate with")


def add_generate_commands(sub) -> None:
    p = sub.add_parser("generate", help="generate replies to prompts (--prompt, or one per stdin line)")
    _add_sampling(p)
    p.add_argument("--prompt", action="append", help="user prompt (repeatable)")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("chat", help="interactive chat in the terminal")
    _add_sampling(p)
    p.set_defaults(func=_cmd_chat)
