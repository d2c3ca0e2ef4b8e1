"""The Ollama TEMPLATE: executed with Go template semantics, it renders as the Jinja chat template.

``render_go_template`` executes the subset of Go's ``text/template`` a TEMPLATE uses. The expected
strings and errors in ``GO_CASES`` are what Go 1.19's ``text/template`` printed for the same
template and data (``.Messages`` a slice of structs with ``Role`` / ``Content``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.errors import ModelError
from tunesmith.export.ollama import (
    check_go_template,
    go_template,
    measure_template,
    modelfile,
    render_go_template,
)

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "chat_templates"


def _msgs(*pairs: str) -> list[dict]:
    return [{"role": r, "content": c} for r, c in zip(pairs[::2], pairs[1::2], strict=True)]


GO_CASES = [
    # trim markers eat the whitespace beside them; "and" stops at the first empty value
    (
        '{{- if and .Messages (eq (index .Messages 0).Role "user") -}}  X  {{- end }} Y {{ len .Messages }}'
        '{{ "a\\tb\\"" }}{{ `raw\\n` }}',
        _msgs("user", "hi"),
        'X Y 1a\tb"raw\\n',
    ),
    (
        '{{- if and .Messages (eq (index .Messages 0).Role "user") -}}  X  {{- end }} Y {{ len .Messages }}',
        [],
        " Y 0",
    ),
    (
        '{{ range .Messages }}[{{ .Role }}:{{ .Content }}]{{ else }}none{{ end }}|{{ or .System "dflt" }}',
        _msgs("system", "s", "user", "u"),
        "[system:s][user:u]|dflt",
    ),
    ("{{ range .Messages }}[{{ .Role }}]{{ else }}none{{ end }}", [], "none"),
    (
        "{{ if not .Messages }}empty{{ else if eq (len .Messages) 1 2 }}one-or-two{{ else }}many{{ end }} {{ true }} "
        "{{ 0 }} {{ ne 1 2 }}",
        _msgs("user", "a", "user", "b", "user", "c"),
        "many true 0 true",
    ),
    ('a\n  {{- "b" -}}  \n c {{"{{"}} d', [], "abc {{ d"),
]
GO_ERRORS = [
    ("{{ index .Messages 5 }}", [], "index out of range: 5"),
    ('{{ if eq 1 "a" }}x{{ end }}', [], "incompatible types for comparison"),
    ('{{ if ne (index .Messages 0).Role "system" }}D{{ end }}', [], "index out of range: 0"),
]


@pytest.mark.parametrize("template, messages, expected", GO_CASES)
def test_go_semantics_match_go_text_template(template, messages, expected):
    assert render_go_template(template, messages) == expected


@pytest.mark.parametrize("template, messages, message", GO_ERRORS)
def test_go_errors_where_go_errs(template, messages, message):
    with pytest.raises(ModelError, match=message):
        render_go_template(template, messages)


@pytest.mark.parametrize(
    "template",
    [
        "{{ with .Messages }}x{{ end }}",
        "{{ $x := 1 }}",
        "{{ .Messages | len }}",
        '{{ printf "%d" 1 }}',
        "{{ if .Messages }}x",
        "{{ end }}",
        "{{ .Messages",
    ],
)
def test_go_constructs_outside_the_subset_are_refused_not_guessed(template):
    with pytest.raises(ModelError, match="Go template"):
        render_go_template(template, _msgs("user", "u"))


CONVERSATIONS = {
    "no system": _msgs("user", "What is 12 + 30?"),
    "no system, three turns": _msgs(
        "user", "hi", "assistant", "Hello!\n - Help", "user", "and  then? \U0001f642"
    ),
    "system": _msgs("system", "Be brief.", "user", "hi"),
    "system, three turns": _msgs("system", "S", "user", "u1", "assistant", "a1", "user", "u2"),
    "empty system": _msgs("system", "", "user", "hi"),
}


@pytest.mark.parametrize("asset", [None, "qwen2_5.jinja", "llama3.jinja"])
def test_template_with_and_without_system_renders_as_jinja(tiny_tokenizer, asset):
    """ChatML without a default system prompt, and two templates that insert one when the
    conversation has no system message (Qwen2.5, Llama 3): the TEMPLATE executed as Go renders
    each conversation as the Jinja template does, default system turn included exactly when
    the first message is not a system one (the same text as that default given as a message)."""
    tok = tiny_tokenizer
    saved = tok.chat_template
    if asset:
        tok.chat_template = (ASSETS / asset).read_text()
    try:
        parts = measure_template(tok)
        template = go_template(parts)
        assert (parts.default_system is None) == (asset is None)
        for name, conv in CONVERSATIONS.items():
            want = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
            assert render_go_template(template, conv) == want, name
            if parts.default_system is not None and conv[0]["role"] != "system":  # as if it were given
                given = [{"role": "system", "content": parts.default_system}] + conv
                assert want == tok.apply_chat_template(given, tokenize=False, add_generation_prompt=True), (
                    name
                )
        check_go_template(template, tok)  # what modelfile() runs before writing
    finally:
        tok.chat_template = saved


def test_a_template_that_drifts_from_jinja_is_refused(tiny_tokenizer):
    template = go_template(measure_template(tiny_tokenizer)).replace(
        "<|im_start|>user\n", "<|im_start|>user "
    )
    with pytest.raises(ModelError, match="renders conversation 0 differently .* from character"):
        check_go_template(template, tiny_tokenizer)


def test_modelfile_holds_the_checked_template(tiny_tokenizer):
    text = modelfile("m.gguf", tiny_tokenizer, context_length=512)
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    check_go_template(template, tiny_tokenizer, [CONVERSATIONS["system, three turns"]])
    assert text.splitlines()[-1] == "PARAMETER num_ctx 512"
