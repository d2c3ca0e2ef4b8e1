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
A template that inserts a default system prompt when the conversation has no system message
(SmolLM2, Qwen2.5, Llama 3 …) is recognised the same way — a user-first conversation opens with
a whole system turn that no message supplied — and gets a Go branch that writes that turn when
the first message is not a system one. Stop parameters are the text of the template's
end-of-turn token(s), so generation ends where it ended in training.

Before a Modelfile is written its TEMPLATE is executed by :func:`render_go_template` (Go
``text/template`` semantics for the subset used here) on the probe conversations and must give
the Jinja rendering (with the generation prompt) byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ModelError
from ..models.template import render_chat

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

    return [
        [msg("system"), msg("user"), msg("assistant"), msg("user"), msg("assistant")],
        [msg("user"), msg("assistant"), msg("user"), msg("assistant")],
        [msg("system"), msg("user")],
        [msg("user")],
    ]


def _render_jinja(tokenizer, messages: list[dict], gen: bool = False) -> str:
    return render_chat(
        tokenizer, messages, add_generation_prompt=gen, what="the chat template (probe conversation)"
    )


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
        return _render_jinja(tokenizer, messages, gen)

    prefix: dict[str, str] = {}
    suffix: dict[str, str] = {}
    firsts: list[tuple[str, str]] = []  # (role, start + prefix) of each probe's first message
    generation = None
    probes = _probes()

    def agree(table, role, value, what):
        if table.setdefault(role, value) != value:
            raise ModelError(
                f"the chat template renders the {what} of {role} turns differently by position "
                "(e.g. a default system prompt, merged or rewritten turns)"
            )

    for conv in probes:
        before = ""
        for k, m in enumerate(conv):
            text = render(conv[: k + 1])
            if not text.startswith(before):
                raise ModelError(
                    "the chat template is not prefix-preserving (adding a turn rewrites earlier ones)"
                )
            seg = text[len(before) :]
            at = seg.find(m["content"])
            if at < 0:
                raise ModelError("the chat template does not render every message's content verbatim")
            agree(suffix, m["role"], seg[at + len(m["content"]) :], "end")
            if k == 0:
                firsts.append((m["role"], seg[:at]))
            else:
                agree(prefix, m["role"], seg[:at], "start")
            if m["role"] == "user":
                gen = render(conv[: k + 1], gen=True)
                if not gen.startswith(text):
                    raise ModelError("add_generation_prompt rewrites the conversation")
                if generation is None:
                    generation = gen[len(text) :]
                elif generation != gen[len(text) :]:
                    raise ModelError("the generation prompt depends on the conversation")
            before = text
    # The opening text before the first turn. A user-first conversation opens with
    # start + prefix[user]; a system-first one with start + prefix[system]. Templates that insert
    # a default system turn when none is given (Qwen2.5, Llama 3) open user-first conversations
    # with prefix[system] + DEFAULT + suffix[system] + prefix[user] instead.
    default_system = None
    user_open = {
        o[: len(o) - len(prefix["user"])] for r, o in firsts if r == "user" and o.endswith(prefix["user"])
    }
    sys_open = {o for r, o in firsts if r == "system"}
    if len(user_open) != 1 or len(sys_open) != 1:
        raise ModelError("the chat template's opening text depends on the conversation")
    (u_open,), (s_open,) = user_open, sys_open
    if s_open.startswith(u_open):
        start = u_open
        agree(prefix, "system", s_open[len(start) :], "start")
    elif "system" in suffix and u_open.startswith(s_open) and u_open.endswith(suffix["system"]):
        start = ""
        agree(prefix, "system", s_open, "start")
        default_system = u_open[len(s_open) : len(u_open) - len(suffix["system"])]
    else:
        raise ModelError("the chat template opens a conversation differently with and without a system turn")
    missing = [r for r in ROLES if r not in prefix or r not in suffix]
    if missing or generation is None:
        raise ModelError(f"could not measure the chat template for roles {missing or ['generation prompt']}")
    parts = TemplateParts(prefix, suffix, generation, start, default_system)
    for conv in probes:  # the decomposition must reproduce every probe exactly
        for gen in [False, True] if conv[-1]["role"] == "user" else [False]:
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
        branches.append(
            f'{{{{ {keyword} eq .Role "{role}" }}}}{_go_literal(parts.prefix[role])}'
            f"{{{{ .Content }}}}{_go_literal(parts.suffix[role])}"
        )
    body = "".join(branches) + "{{ end }}"
    default = ""
    if parts.default_system is not None:
        # Ollama executes a TEMPLATE only for a conversation with at least one message (an empty
        # chat request just loads the model), so `index .Messages 0` exists.
        default = (
            f'{{{{ if ne (index .Messages 0).Role "system" }}}}{_go_literal(parts.prefix["system"])}'
            f"{_go_literal(parts.default_system)}{_go_literal(parts.suffix['system'])}{{{{ end }}}}"
        )
    return f"{_go_literal(parts.start)}{default}{{{{ range .Messages }}}}{body}{{{{ end }}}}{_go_literal(parts.generation)}"


def modelfile(
    gguf_name: str, tokenizer, *, context_length: int | None = None, system: str | None = None
) -> str:
    """Modelfile text: FROM the GGUF beside it, TEMPLATE, stop PARAMETERs (and num_ctx)."""
    from ..models.template import stop_token_ids

    parts = measure_template(tokenizer)
    bos = getattr(tokenizer, "bos_token", None)
    added = ""  # what llama.cpp puts before the TEMPLATE's text
    if bos and getattr(tokenizer, "add_bos_token", False):
        # llama.cpp adds BOS itself when the GGUF says so; a template that also writes it would
        # double it. It sits either before the first turn or in the (always first) system prefix.
        if parts.start.startswith(bos):
            parts.start, added = parts.start[len(bos) :], bos
        elif parts.default_system is not None and parts.prefix["system"].startswith(bos):
            parts.prefix["system"], added = parts.prefix["system"][len(bos) :], bos
    template = go_template(parts)
    check_go_template(template, tokenizer, before=added)
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


def check_go_template(
    template: str, tokenizer, conversations: list[list[dict]] | None = None, before: str = ""
) -> None:
    """ModelError unless ``before`` + the TEMPLATE executed on each conversation equals the Jinja
    template's rendering with the generation prompt (default: the probe conversations, with and
    without a system message)."""
    for k, conv in enumerate(conversations or _probes()):
        got = before + render_go_template(template, conv)
        want = _render_jinja(tokenizer, conv, gen=True)
        if got != want:
            at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            raise ModelError(
                f"the Ollama TEMPLATE renders conversation {k} differently from the chat template "
                f"from character {at}: {got[at : at + 40]!r} instead of {want[at : at + 40]!r}"
            )


# ---- Go text/template, the subset a TEMPLATE here uses ----------------------------------------
# Enough of Go's text/template to execute a TEMPLATE the way Ollama does (data: .Messages, a list
# of messages with .Role and .Content): text, {{- / -}} trimming, printing, if / else if / else,
# range / else, end, string / integer / boolean literals, field chains (also on a parenthesised
# pipeline), and the builtins eq, ne, and, or (short-circuit, as since Go 1.18), not, index, len.
# Anything else is an error rather than a guess.

_GO_TOKEN = re.compile(r'\s+|"(?:[^"\\\n]|\\.)*"|`[^`]*`|[()]|(?:\.[A-Za-z_]\w*)+|\.|-?\d+|[A-Za-z_]\w*|\S')
_GO_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
}


def render_go_template(template: str, messages: list[dict]) -> str:
    """Execute an Ollama TEMPLATE on ``messages`` (``{"role", "content"}`` dicts) as Go would."""
    data = {
        "Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages],
        "System": "",
        "Prompt": "",
        "Response": "",
    }
    out: list[str] = []
    _go_exec(_go_tree(_go_items(template)), data, out)
    return "".join(out)


def _go_items(template: str) -> list[tuple[str, str]]:
    """[("text", …) | ("action", …)], trim markers applied to the neighbouring text."""
    items, pos, trim_next = [], 0, False
    while True:
        i = template.find("{{", pos)
        text = template[pos:] if i < 0 else template[pos:i]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if i < 0:
            items.append(("text", text))
            return items
        j = i + 2
        if template[j : j + 1] == "-" and template[j + 1 : j + 2] in (" ", "\t", "\r", "\n"):
            text, j = text.rstrip(" \t\r\n"), j + 1
        items.append(("text", text))
        k, quote = j, None
        while k < len(template):  # the closing }} outside string literals
            c = template[k]
            if quote:
                k += 2 if (c == "\\" and quote == '"') else 1
                quote = None if c == quote else quote
                continue
            if c in '"`':
                quote = c
            elif template.startswith("}}", k):
                break
            k += 1
        else:
            raise ModelError("Go template: an action is not closed with }}")
        body = template[j:k]
        trim_next = len(body) >= 2 and body[-1] == "-" and body[-2] in " \t\r\n"
        items.append(("action", (body[:-1] if trim_next else body).strip()))
        pos = k + 2


def _go_tree(items: list[tuple[str, str]]) -> list:
    """Nested nodes: ("text", s) | ("print", expr) | ("if"|"range", [(expr, body)…], else_body)."""
    root: list = []
    stack: list[tuple[list, list]] = [([], root)]  # (node being built or [], list receiving nodes)
    for kind, value in items:
        body = stack[-1][1]
        if kind == "text":
            if value:
                body.append(("text", value))
            continue
        head, _, rest = value.partition(" ")
        rest = rest.strip()
        if head in ("if", "range"):
            node = [head, [(_go_parse(rest), [])], None]
            body.append(node)
            stack.append((node, node[1][0][1]))
        elif head == "else":
            node = stack[-1][0]
            if not node or node[2] is not None:
                raise ModelError("Go template: {{ else }} outside if / range, or after the final else")
            if rest.startswith("if ") and node[0] == "if":
                node[1].append((_go_parse(rest[3:]), []))
                stack[-1] = (node, node[1][-1][1])
            elif not rest:
                node[2] = []
                stack[-1] = (node, node[2])
            else:
                raise ModelError(f"Go template: unsupported {{{{ {value} }}}}")
        elif head == "end":
            if len(stack) == 1:
                raise ModelError("Go template: {{ end }} without if / range")
            stack.pop()
        elif head in ("with", "define", "template", "block", "break", "continue") or value.startswith(
            ("/*", "$")
        ):
            raise ModelError(f"Go template: {{{{ {value} }}}} is outside the subset this check executes")
        else:
            body.append(("print", _go_parse(value)))
    if len(stack) != 1:
        raise ModelError("Go template: an if / range has no {{ end }}")
    return root


def _go_parse(expr: str):
    """A pipeline without ``|``: a term, or a function applied to terms."""
    tokens = [(m.group(), m.start()) for m in _GO_TOKEN.finditer(expr)]
    node, k = _go_command(tokens, 0)
    if k != len(tokens):
        raise ModelError(f"Go template: cannot parse {expr!r}")
    return node


def _go_command(tokens, k):
    args = []
    while k < len(tokens) and tokens[k][0] != ")":
        tok = tokens[k][0]
        if tok.isspace():
            k += 1
            continue
        if tok == "(":
            inner, k = _go_command(tokens, k + 1)
            if k >= len(tokens) or tokens[k][0] != ")":
                raise ModelError("Go template: unbalanced parentheses")
            end = tokens[k][1] + 1
            k += 1
            if k < len(tokens) and tokens[k][0].startswith(".") and tokens[k][1] == end:  # (x).Field
                inner, k = ("field", inner, tokens[k][0].split(".")[1:]), k + 1
            args.append(inner)
        elif tok == ".":
            args.append(("dot",))
            k += 1
        elif tok.startswith("."):
            args.append(("field", None, tok.split(".")[1:]))
            k += 1
        elif tok[0] in '"`':
            args.append(("lit", _go_string(tok)))
            k += 1
        elif tok.lstrip("-").isdigit():
            args.append(("lit", int(tok)))
            k += 1
        elif tok in ("true", "false"):
            args.append(("lit", tok == "true"))
            k += 1
        elif tok in _GO_FUNCS and not args:
            args.append(("func", tok))
            k += 1
        else:
            raise ModelError(f"Go template: {tok!r} is outside the subset this check executes")
    if not args:
        raise ModelError("Go template: an empty command")
    if args[0][0] == "func":
        return ("call", args[0][1], args[1:]), k
    if len(args) != 1:
        raise ModelError("Go template: more than one value in a command that calls no function")
    return args[0], k


def _go_string(tok: str) -> str:
    if tok[0] == "`":
        return tok[1:-1]
    return re.sub(r"\\(.)", lambda m: _GO_ESCAPES.get(m.group(1)) or _go_bad_escape(m.group(1)), tok[1:-1])


def _go_bad_escape(c: str) -> str:
    raise ModelError(f"Go template: string escape \\{c} is outside the subset this check executes")


def _go_truth(v) -> bool:
    return bool(v) if isinstance(v, (bool, int, str, list, dict)) else v is not None


def _go_eq(a, b) -> bool:
    if type(a) is not type(b) or not isinstance(a, (bool, int, str)):
        raise ModelError(
            f"Go template: incompatible types for comparison ({type(a).__name__}, {type(b).__name__})"
        )
    return a == b


def _go_index(v, *keys):
    for key in keys:
        if isinstance(v, list) and isinstance(key, int):
            if not 0 <= key < len(v):
                raise ModelError(f"Go template: error calling index: index out of range: {key}")
            v = v[key]
        elif isinstance(v, dict):
            v = v.get(key)
        else:
            raise ModelError("Go template: can't index that value")
    return v


_GO_FUNCS = {"eq", "ne", "and", "or", "not", "index", "len"}


def _go_eval(node, dot):
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "dot":
        return dot
    if kind == "field":
        v = dot if node[1] is None else _go_eval(node[1], dot)
        for name in node[2]:
            if not isinstance(v, dict) or name not in v:
                raise ModelError(f"Go template: can't evaluate field {name}")
            v = v[name]
        return v
    name, args = node[1], node[2]
    if name in ("and", "or"):  # arguments evaluated only until the result is known
        if not args:
            raise ModelError(f"Go template: {name} needs arguments")
        for a in args:
            v = _go_eval(a, dot)
            if _go_truth(v) != (name == "and"):
                return v
        return v
    vals = [_go_eval(a, dot) for a in args]
    if name == "eq" and len(vals) >= 2:
        return any(_go_eq(vals[0], b) for b in vals[1:])
    if name == "ne" and len(vals) == 2:
        return not _go_eq(*vals)
    if name == "not" and len(vals) == 1:
        return not _go_truth(vals[0])
    if name == "index" and vals:
        return _go_index(*vals)
    if name == "len" and len(vals) == 1 and isinstance(vals[0], (str, list, dict)):
        return len(vals[0])
    raise ModelError(f"Go template: wrong arguments for {name}")


def _go_exec(nodes: list, dot, out: list[str]) -> None:
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "print":
            v = _go_eval(node[1], dot)
            if isinstance(v, bool):
                out.append("true" if v else "false")
            elif isinstance(v, (int, str)):
                out.append(str(v))
            else:
                raise ModelError("Go template: printing a value other than a string, number or boolean")
        elif kind == "if":
            for cond, body in node[1]:
                if _go_truth(_go_eval(cond, dot)):
                    _go_exec(body, dot, out)
                    break
            else:
                _go_exec(node[2] or [], dot, out)
        else:  # range
            seq = _go_eval(node[1][0][0], dot)
            if not isinstance(seq, list):
                raise ModelError("Go template: range over a value that is not a list")
            for item in seq:
                _go_exec(node[1][0][1], item, out)
            if not seq:
                _go_exec(node[2] or [], dot, out)
