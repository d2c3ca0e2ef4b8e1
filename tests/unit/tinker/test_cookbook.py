"""tunesmith.tinker.cookbook on the tiny locally trained tokenizer (the real SmolLM2 template is
checked token by token in tests/realmodel/test_smollm2_tinker_cookbook.py)."""

from __future__ import annotations

import factory
import pytest

pytest.importorskip(
    "tinker_cookbook",
    reason="tinker-cookbook is not installed (pip install --no-deps tinker-cookbook==0.6.1; scripts/setup.sh does it)",
)

DEFAULT_SYSTEM = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are Kettle.<|im_end|>\n{% endif %}"
    + factory.CHATML
)


def _tokenizer(tmp_path, template):
    from tunesmith.models.load import load_tokenizer

    factory.build_tokenizer(tmp_path, chat_template=template)
    return load_tokenizer(str(tmp_path))


def test_default_system_prompt_read_from_the_template(tmp_path):
    from tunesmith.tinker.cookbook import default_system_prompt

    assert default_system_prompt(_tokenizer(tmp_path / "a", DEFAULT_SYSTEM)) == "You are Kettle."
    assert default_system_prompt(_tokenizer(tmp_path / "b", factory.CHATML)) is None


def test_a_template_that_is_not_chatml_is_refused(tmp_path):
    from tunesmith.tinker.cookbook import CHATML_RENDERER, default_system_prompt

    llama_like = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(ValueError, match=f"not ChatML.*{CHATML_RENDERER}"):
        default_system_prompt(_tokenizer(tmp_path, llama_like))


def test_registered_tokenizer_and_renderer_follow_the_template(tmp_path):
    """register_local_model makes the cookbook's get_tokenizer load the local folder (once) and
    its get_renderer build the ChatML renderer: supervised tokens = the template's without the
    final newline, weights on the assistant turn only; the default system prompt is added only
    where the conversation has none, and a CUSTOMIZED (per-message trainable) chat stays valid."""
    from tinker_cookbook import renderers
    from tinker_cookbook.tokenizer_utils import get_tokenizer, unregister_tokenizer

    from tunesmith.tinker.cookbook import register_local_model

    factory.build_tokenizer(tmp_path, chat_template=DEFAULT_SYSTEM)
    name = register_local_model("local/kettle", str(tmp_path))
    try:
        tok = get_tokenizer("local/kettle")
        assert get_tokenizer("local/kettle") is tok
        renderer = renderers.get_renderer(name, tok)
        chat = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "tea is hot"}]
        for messages in (chat, [{"role": "system", "content": "be brief"}, *chat]):
            tokens, weights = renderer.build_supervised_example(messages)
            expected = tok.apply_chat_template(messages, tokenize=False)
            assert tok.decode(tokens.to_ints()) + "\n" == expected
            trained = [t for t, w in zip(tokens.to_ints(), weights.tolist()) if w > 0]
            assert tok.decode(trained) == "tea is hot<|im_end|>"
            prompt = renderer.build_generation_prompt(messages[:-1]).to_ints()
            assert tok.decode(prompt) == tok.apply_chat_template(
                messages[:-1], tokenize=False, add_generation_prompt=True
            )
        custom = [{**m, "trainable": m["role"] == "assistant"} for m in chat]
        _, weights = renderer.build_supervised_example(custom, renderers.TrainOnWhat.CUSTOMIZED)
        assert weights.sum() > 0
    finally:
        unregister_tokenizer("local/kettle")
