"""``model.chat_template`` by name: unknown names and template-less base models are clear
tunesmith errors listing the names; a file path still works; a template whose turn markers the
tokenizer lacks is refused. (Each named template's masks: tests/unit/data/test_render_masks.py.)"""

from __future__ import annotations

import factory
import pytest

from tunesmith.config import load_config, validate
from tunesmith.data.example import Example
from tunesmith.data.render import Renderer
from tunesmith.errors import ConfigError, DataError, ModelError
from tunesmith.models.load import load_tokenizer
from tunesmith.models.named_templates import NAMES, TEMPLATES


def _config(template):
    return {"model": {"path": "m", "chat_template": template}, "data": {"train": "t.jsonl"}}


@pytest.mark.parametrize("name", NAMES)
def test_every_name_validates_and_has_its_file(name):
    validate(load_config(_config(name)))
    assert TEMPLATES[name].path.is_file() and "{%" in TEMPLATES[name].text()


def test_unknown_name_is_a_config_error_with_the_closest_name():
    with pytest.raises(ConfigError) as err:
        validate(load_config(_config("chatmll")))
    msg = str(err.value)
    assert "Did you mean 'chatml'?" in msg and all(n in msg for n in NAMES) and ".jinja" in msg


def test_a_file_path_still_works(tmp_path, tiny_tokenizer_dir):
    f = tmp_path / "mine.jinja"
    f.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    validate(load_config(_config(str(f))))
    assert load_tokenizer(str(tiny_tokenizer_dir), str(f)).chat_template == f.read_text()
    with pytest.raises(ModelError, match="chat template file not found: .*nope.jinja"):
        load_tokenizer(str(tiny_tokenizer_dir), str(tmp_path / "nope.jinja"))


def test_named_template_replaces_the_tokenizers_own(tiny_tokenizer_dir):
    tok = load_tokenizer(str(tiny_tokenizer_dir), "chatml")
    assert tok.chat_template == TEMPLATES["chatml"].text()


def test_template_whose_markers_the_tokenizer_lacks_is_refused(tiny_tokenizer_dir):
    with pytest.raises(ModelError) as err:
        load_tokenizer(str(tiny_tokenizer_dir), "llama3")
    msg = str(err.value)
    assert "<|start_header_id|>" in msg and "<|eot_id|>" in msg and "chatml" in msg


def test_base_model_without_template_names_the_option(tmp_path):
    factory.build_tokenizer(tmp_path / "base", chat_template="")
    tok = load_tokenizer(str(tmp_path / "base"))
    example = Example(kind="chat", source="data.jsonl:3", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(DataError) as err:
        Renderer(tok, max_length=64, template_name="models/base")(example)
    msg = str(err.value)
    assert "data.jsonl, line 3" in msg and "model.chat_template" in msg
    assert all(n in msg for n in NAMES) and "chat_template is not set" not in msg


def test_data_show_takes_a_chat_template(tmp_path, capsys):
    """`tunesmith data show --chat-template NAME` renders a template-less base model's chats; without
    it the error names the option."""
    from tunesmith.cli import main

    factory.build_tokenizer(tmp_path / "base", chat_template="")
    data = factory.write_jsonl(tmp_path / "chats.jsonl", factory.color_chats(2))
    argv = ["data", "show", str(data), "--model", str(tmp_path / "base"), "-n", "1", "--color", "never"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--chat-template" in err and "model.chat_template" in err and "chatml" in err
    assert main([*argv, "--chat-template", "chatml"]) == 0
    out = capsys.readouterr().out
    assert "<|im_start|>user\n" in out and "[[" in out
    assert main(["data", "check", str(data), "--chat-template", "chatml"]) == 2
    assert "--chat-template needs --model" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, markers, bos",
    [
        ("chatml", [], None),
        ("qwen", [], None),
        (
            "llama3",
            ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
            "<|begin_of_text|>",
        ),
        ("phi3", ["<|user|>", "<|assistant|>", "<|end|>", "<|system|>"], None),
    ],
)
def test_named_template_carries_into_an_ollama_modelfile(tmp_path, name, markers, bos):
    """A model trained with a named template exports an Ollama TEMPLATE that renders the same text
    (mistral and gemma put the system prompt inside the first user turn, which Ollama's per-role
    template cannot express: the export says so, as for Mistral's own template)."""
    from tunesmith.export.ollama import go_template, measure_template, render_go_template

    factory.build_tokenizer(tmp_path / name, vocab_size=400, extra_special=markers, chat_template="")
    tok = load_tokenizer(str(tmp_path / name), name)
    if bos:
        tok.bos_token = bos
    conv = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "again"},
    ]
    parts = measure_template(tok)
    expected = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    assert parts.render(conv, True) == expected
    assert render_go_template(go_template(parts), conv) == expected
