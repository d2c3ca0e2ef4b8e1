"""An Ollama ``Modelfile`` whose TEMPLATE reproduces the training chat template.

Ollama templates are Go templates, not Jinja, so the Jinja template cannot be copied. Instead
it is *measured*: probe conversations with sentinel contents are rendered by the real template
(the same tokenizer the model was trained with) and each message's rendering is cut at its
sentinel into a role prefix and suffix; the generation prompt is what ``add_generation_prompt``
appends. The pieces must be the same wherever the role occurs, and re-assembling every probe
from them must give the Jinja rendering byte for byte; otherwise the template cannot be
expressed this way (it inserts default system prompts, merges turns, ...) and export fails with
the reason rather than writing a template that would drift from training.

The TEMPLATE iterates Ollama's ``.Messages`` (fields ``.Role``, ``.Content``) and writes no
whitespace of its own (no ``{{-`` trimming, which would eat newlines that belong to the format).
Stop parameters are the text of the template's end-of-turn token(s), so generation ends where
it ended in training.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ModelError

_S = "\u2063TS{}\u2063"  # invisible separator: cannot collide with template text
ROLES = ("system", "user", "assistant")


@dataclass
class TemplateParts:
    """prefix/suffix per role, the generation prompt, text before the first message, default system."""

    prefix: dict[str, str]
    suffix: dict[str, str]
    generation: str
    start: str = ""
    default_system: str | None = None  # rendered as a system turn when the conversation has none

    def render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        out = self.start
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            out += self.prefix["system"] + self.default_system + self.suffix["system"]
        out += "".join(self.prefix[m["role"]] + m["content"] + self.suffix[m["role"]] for m in messages)
        return out + (self.generation if add_generation_prompt else "")


def _probes() -> list[list[dict]]:
    n = iter(range(100))
    def msg(role):
        return {"role": role, "content": _S.format(next(n))}
    return [[msg("system"), msg("user"), msg("assistant"), msg("user"), msg("assistant")],
            [msg("user"), msg("assistant"), msg("user"), msg("assistant")],
            [msg("system"), msg("user")], [msg("user")]]


def measure_template(tokenizer) -> TemplateParts:
    """Per-role prefix/suffix of ``tokenizer.chat_template``; ModelError if not decomposable.

    Conversations are rendered prefix by prefix: message ``k`` adds exactly
    ``prefix[role] + content + suffix[role]`` to the rendering of the first ``k-1`` (the first
    message also carries ``start``), and the generation prompt is what ``add_generation_prompt``
    appends after a user turn.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError("the tokenizer has no chat template; an Ollama TEMPLATE cannot be derived")

    def render(messages, gen=False):
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
        except Exception as exc:
            raise ModelError(f"the chat template rejected a probe conversation: {exc}") from None

    prefix: dict[str, str] = {}
    suffix: dict[str, str] = {}
    firsts: list[tuple[str, str]] = []  # (role, start + prefix) of each probe's first message
    generation = None
    probes = _probes()

    def agree(table, role, value, what):
        if table.setdefault(role, value) != value:
            raise ModelError(f"the chat template renders the {what} of {role} turns differently by position "
                             "(e.g. a default system prompt, merged or rewritten turns)")

    for conv in probes:
        before = ""
        for k, m in enumerate(conv):
            text = render(conv[:k + 1])
            if not text.startswith(before):
                raise ModelError("the chat template is not prefix-preserving (adding a turn rewrites earlier ones)")
            seg = text[len(before):]
            at = seg.find(m["content"])
            if at < 0:
                raise ModelError("the chat template does not render every message's content verbatim")
            agree(suffix, m["role"], seg[at + len(m["content"]):], "end")
            if k == 0:
                firsts.append((m["role"], seg[:at]))
            else:
                agree(prefix, m["role"], seg[:at], "start")
            if m["role"] == "user":
                gen = render(conv[:k + 1], gen=True)
                if not gen.startswith(text):
                    raise ModelError("add_generation_prompt rewrites the conversation")
                if generation is None:
                    generation = gen[len(text):]
                elif generation != gen[len(text):]:
                    raise ModelError("the generation prompt depends on the conversation")
            before = text
    # The opening text before the first turn. A user-first conversation opens with
    # start + prefix[user]; a system-first one with start + prefix[system]. Templates that insert
    # a default system turn when none is given (Qwen2.5, Llama 3) open user-first conversations
    # with prefix[system] + DEFAULT + suffix[system] + prefix[user] instead.
    default_system = None
    user_open = {o[:len(o) - len(prefix["user"])] for r, o in firsts if r == "user" and o.endswith(prefix["user"])}
    sys_open = {o for r, o in firsts if r == "system"}
    if len(user_open) != 1 or len(sys_open) != 1:
        raise ModelError("the chat template's opening text depends on the conversation")
    (u_open,), (s_open,) = user_open, sys_open
    if s_open.startswith(u_open):
        start = u_open
        agree(prefix, "system", s_open[len(start):], "start")
    elif "system" in suffix and u_open.startswith(s_open) and u_open.endswith(suffix["system"]):
        start = ""
        agree(prefix, "system", s_open, "start")
        default_system = u_open[len(s_open):len(u_open) - len(suffix["system"])]
    else:
        raise ModelError("the chat template opens a conversation differently with and without a system turn")
    missing = [r for r in ROLES if r not in prefix or r not in suffix]
    if missing or generation is None:
        raise ModelError(f"could not measure the chat template for roles {missing or ['generation prompt']}")
    parts = TemplateParts(prefix, suffix, generation, start, default_system)
    for conv in probes:  # the decomposition must reproduce every probe exactly
        for gen in ([False, True] if conv[-1]["role"] == "user" else [False]):
            if parts.render(conv, gen) != render(conv, gen):
                raise ModelError("the chat template cannot be expressed as per-message prefix/suffix text")
    return parts


def _go_literal(text: str) -> str:
    """Go-template text is literal except ``{{``; emit braces through a Go string action."""
    return text.replace("{{", '{{"{{"}}')


def go_template(parts: TemplateParts) -> str:
    """The Ollama TEMPLATE string (Go template over ``.Messages``)."""
    branches = []
    for i, role in enumerate(ROLES):
        keyword = "if" if i == 0 else "else if"
        branches.append(f'{{{{ {keyword} eq .Role "{role}" }}}}{_go_literal(parts.prefix[role])}'
                        f'{{{{ .Content }}}}{_go_literal(parts.suffix[role])}')
    body = "".join(branches) + "{{ end }}"
    default = ""
    if parts.default_system is not None:
        default = (f'{{{{ if ne (index .Messages 0).Role "system" }}}}{_go_literal(parts.prefix["system"])}'
                   f'{_go_literal(parts.default_system)}{_go_literal(parts.suffix["system"])}{{{{ end }}}}')
    return f"{_go_literal(parts.start)}{default}{{{{ range .Messages }}}}{body}{{{{ end }}}}{_go_literal(parts.generation)}"


def modelfile(gguf_name: str, tokenizer, *, context_length: int | None = None,
              system: str | None = None) -> str:
    """Modelfile text: FROM the GGUF beside it, TEMPLATE, stop PARAMETERs (and num_ctx)."""
    from ..models.template import stop_token_ids

    parts = measure_template(tokenizer)
    bos = getattr(tokenizer, "bos_token", None)
    if bos and getattr(tokenizer, "add_bos_token", False):
        # llama.cpp adds BOS itself when the GGUF says so; a template that also writes it would
        # double it. It sits either before the first turn or in the (always first) system prefix.
        if parts.start.startswith(bos):
            parts.start = parts.start[len(bos):]
        elif parts.default_system is not None and parts.prefix["system"].startswith(bos):
            parts.prefix["system"] = parts.prefix["system"][len(bos):]
    template = go_template(parts)
    if '"""' in template:
        raise ModelError('the chat template contains """, which a Modelfile TEMPLATE cannot hold')
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    for tok_id in stop_token_ids(tokenizer):
        text = tokenizer.convert_ids_to_tokens(tok_id)
        lines.append(f"PARAMETER stop {_quote(text)}")
    if context_length:
        lines.append(f"PARAMETER num_ctx {int(context_length)}")
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
