"""OpenAI's grader template syntax: ``{{ namespace.path }}`` substitution, nothing more.

A template is a plain string in which every ``{{ … }}`` names one value:

* the namespace, ``item`` (the dataset row) or ``sample`` (the model's output: ``output_text``,
  ``output_json``, ``output_tools``, ``choices``), then
* a JSON-path-like walk: ``.key`` for an object key made of letters, digits, ``_`` and ``-``,
  ``[3]`` for a list index, ``["odd key"]`` for any other key (dots, spaces …). ``{{item.a.b}}``, ``{{ sample.output_json.answer }}`` and
  ``{{item.choices[0].text}}`` are all valid; spaces inside the braces are ignored.

Contract (this module is the one owner of it):

* Substitution is one pass over the template: text that a substituted value contains, even
  ``{{item.secret}}`` in a model's output, is never expanded again. Nothing is evaluated; there
  are no filters, calls, loops or attribute lookups (this is *not* Jinja).
* A string value is inserted as-is; any other value (number, bool, null, list, object) as its
  compact JSON text (``true``, ``null``, ``{"a":1}``).
* A path that does not resolve (missing key, index out of range, walking into a string) is a
  :class:`TemplateVariableError` naming the variable — never a silent empty string, so a typo
  in a grader cannot quietly turn every reward into 0. (OpenAI does not document its behaviour
  for missing variables; this is tunesmith's choice.)
* A ``{{`` without a matching ``}}`` is literal text. A ``{{ … }}`` whose content is not a valid
  variable is a :class:`~tunesmith.graders.spec.GraderError` when the grader is parsed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import TunesmithError

NAMESPACES = ("item", "sample")

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
# One path step: .key (letters, digits, _ and -), [123], ["any key"] or ['any key'].
_STEP = re.compile(r"""\.([\w-]+)|\[(\d+)\]|\["([^"]*)"\]|\['([^']*)'\]""")
_HEAD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class TemplateSyntaxError(TunesmithError):
    """A ``{{ … }}`` whose content is not ``namespace.path``."""


class TemplateVariableError(TunesmithError):
    """A variable that names nothing in this sample or item (a per-sample error)."""


@dataclass(frozen=True)
class Variable:
    """A parsed ``{{ … }}``: ``namespace`` plus the steps (``str`` keys, ``int`` indexes)."""

    text: str
    namespace: str
    steps: tuple[str | int, ...]

    def resolve(self, scope: dict[str, Any]) -> Any:
        """The value this variable names in ``scope`` (``{"item": …, "sample": …}``)."""
        value = scope.get(self.namespace)
        walked = self.namespace
        for step in self.steps:
            if isinstance(step, int) and isinstance(value, list) and 0 <= step < len(value):
                value = value[step]
            elif isinstance(step, str) and isinstance(value, dict) and step in value:
                value = value[step]
            else:
                raise TemplateVariableError(
                    f"template variable {{{{{self.text}}}}}: {_describe_miss(value, step, walked)}"
                )
            walked += f"[{step}]" if isinstance(step, int) else f".{step}"
        return value


def parse_variable(text: str) -> Variable:
    """Parse the inside of one ``{{ … }}``; :class:`TemplateSyntaxError` if it is not valid."""
    body = text.strip()
    head = _HEAD.match(body)
    if head is None or head.group(0) not in NAMESPACES:
        raise TemplateSyntaxError(
            f"{{{{{text}}}}} must start with a namespace, one of {', '.join(NAMESPACES)} "
            "(e.g. {{item.answer}} or {{sample.output_text}})"
        )
    steps: list[str | int] = []
    pos = head.end()
    while pos < len(body):
        step = _STEP.match(body, pos)
        if step is None:
            raise TemplateSyntaxError(
                f'{{{{{text}}}}}: cannot read the path at {body[pos:]!r}; use .key, [index] or ["key"]'
            )
        key, index, dq, sq = step.groups()
        steps.append(int(index) if index is not None else next(s for s in (key, dq, sq) if s is not None))
        pos = step.end()
    if not steps:
        raise TemplateSyntaxError(
            f"{{{{{text}}}}} names a whole namespace; name a variable such as {{{{{head.group(0)}.key}}}}"
        )
    return Variable(text.strip(), head.group(0), tuple(steps))


def variables(template: str) -> list[Variable]:
    """Every variable in ``template``, parsed (raises :class:`TemplateSyntaxError`)."""
    return [parse_variable(m.group(1)) for m in _PLACEHOLDER.finditer(template)]


def render(template: str, *, sample: dict[str, Any], item: dict[str, Any]) -> str:
    """``template`` with every ``{{ … }}`` replaced by its value (see the module contract)."""
    scope = {"sample": sample, "item": item}

    def substitute(match: re.Match) -> str:
        return format_value(parse_variable(match.group(1)).resolve(scope))

    return _PLACEHOLDER.sub(substitute, template)


def format_value(value: Any) -> str:
    """A string as-is; anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _describe_miss(value: Any, step: str | int, walked: str) -> str:
    if isinstance(step, int):
        if isinstance(value, list):
            return f"{walked} has {len(value)} element(s), no index {step}"
        return f"{walked} is {json_kind(value)}, not a list"
    if isinstance(value, dict):
        return f"{walked} has no key {step!r}"
    return f"{walked} is {json_kind(value)}, not an object (looking for key {step!r})"


def json_kind(value: Any) -> str:
    """A parsed JSON value's kind for messages: "null", "a string", "a number", "a list" ..."""
    if value is None:
        return "null"
    return {
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)
