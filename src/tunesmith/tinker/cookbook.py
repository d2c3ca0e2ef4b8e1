"""Client-side glue so that tinker-cookbook's own loops drive a model tunesmith serves.

tinker-cookbook (``pip install --no-deps tinker-cookbook==0.6.1``, see docs/tinker.md) loads a
tokenizer by model name from the Hugging Face Hub and picks a renderer (chat format) from its
own table of models. Neither knows a model that only exists on this machine (the shipped
SmolLM2-135M-Instruct GGUF, any local folder), and nothing may be downloaded. The cookbook has
two hooks for exactly that, and this module only calls them:

- ``tinker_cookbook.tokenizer_utils.register_tokenizer(name, factory)``: ``get_tokenizer(name)``
  then returns the tokenizer of the local folder (a GGUF file is dequantised once into
  tunesmith's cache, :func:`tunesmith.models.load.load_tokenizer`).
- ``tinker_cookbook.renderers.register_renderer(name, factory)``: :data:`CHATML_RENDERER` is the
  cookbook's ``qwen3_instruct`` renderer (ChatML, no thinking) plus the default system prompt a
  ChatML template injects when a conversation has none. SmolLM2's template injects "You are a
  helpful AI assistant named SmolLM, trained by Hugging Face"; ``qwen3_instruct`` alone does not,
  so its tokens differ from the template's on every conversation without a system message.
  With that one addition the tokens equal ``apply_chat_template``'s, except that a supervised
  example ends at the assistant's ``<|im_end|>`` (the cookbook drops the template's trailing
  newline: sampling stops at ``<|im_end|>``, so it is never produced) —
  tests/realmodel/test_smollm2_tinker_cookbook.py checks it token by token.

Nothing here is imported by the server; ``tinker_cookbook`` is imported lazily.
"""

from __future__ import annotations

import functools
import re

CHATML_RENDERER = "tunesmith/chatml"
"""The renderer name :func:`register_local_model` registers (one for every ChatML model)."""

_SYSTEM_PROBE = "\x00probe\x00"


def default_system_prompt(tokenizer) -> str | None:
    """The system message ``tokenizer``'s chat template writes into a conversation that has
    none (SmolLM2, Qwen2.5), read from the template itself; None when it writes none.

    Raises ValueError when the template is not ChatML (``<|im_start|>role\\n…<|im_end|>``):
    the renderer this module registers writes ChatML and must not be used for anything else.
    """
    text = tokenizer.apply_chat_template([{"role": "user", "content": _SYSTEM_PROBE}], tokenize=False)
    if "<|im_start|>user\n" + _SYSTEM_PROBE + "<|im_end|>" not in text:
        raise ValueError(
            f"{getattr(tokenizer, 'name_or_path', 'the tokenizer')}: its chat template is not ChatML "
            f"(<|im_start|>user\\n…<|im_end|>); {CHATML_RENDERER} would render it wrongly"
        )
    found = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n", text, re.DOTALL)
    return found.group(1) if found else None


def chatml_renderer(tokenizer, image_processor=None):
    """The cookbook's ``Qwen3InstructRenderer`` for ``tokenizer``, adding the template's default
    system prompt (:func:`default_system_prompt`) where a conversation starts without one.
    A renderer factory in the shape ``renderers.register_renderer`` takes."""
    from tinker_cookbook.renderers.qwen3 import Qwen3InstructRenderer

    system = default_system_prompt(tokenizer)

    class ChatMLRenderer(Qwen3InstructRenderer):
        # build_supervised_examples delegates here (the renderer has the extension property)
        def _with_system(self, messages):
            if system is None or (messages and messages[0]["role"] == "system"):
                return list(messages)
            added = {"role": "system", "content": system}
            # TrainOnWhat.CUSTOMIZED wants a trainable field on every message, the other modes
            # on none: mirror the conversation (as the cookbook's Qwen3.8 renderer does)
            if any("trainable" in m for m in messages):
                added["trainable"] = False
            return [added, *messages]

        def build_generation_prompt(self, messages, *args, **kwargs):
            return super().build_generation_prompt(self._with_system(messages), *args, **kwargs)

        def build_supervised_example(self, messages, *args, **kwargs):
            return super().build_supervised_example(self._with_system(messages), *args, **kwargs)

    return ChatMLRenderer(tokenizer)


def register_local_model(model_name: str, model_path: str) -> str:
    """Make tinker-cookbook's ``get_tokenizer(model_name)`` load the tokenizer of
    ``model_path`` (a Hugging Face folder or a GGUF file, as the server's ``--tinker-model
    NAME=PATH`` names it), and register :data:`CHATML_RENDERER`. Returns the renderer name to
    put in a cookbook config (``renderer_name``). Loads nothing until the cookbook asks."""
    from tinker_cookbook import renderers
    from tinker_cookbook.tokenizer_utils import register_tokenizer

    from ..models.load import load_tokenizer

    @functools.cache
    def factory():  # the cookbook calls the factory on every get_tokenizer(): load once
        return load_tokenizer(str(model_path))

    register_tokenizer(model_name, factory)
    renderers.register_renderer(CHATML_RENDERER, chatml_renderer)
    return CHATML_RENDERER
