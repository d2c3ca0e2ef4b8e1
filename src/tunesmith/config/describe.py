"""The config's documentation as ``tunesmith config`` prints it: every key with its default, under
the schema's own description of it as YAML comments.

The descriptions are the docstrings in :mod:`.schema` (a section's class docstring; the string
literal after each field), read from its source with :mod:`ast`, so they are written once. The
output is valid YAML: loading it gives the default config (tests/unit/config/test_describe.py).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import typing
from pathlib import Path

import yaml

from . import schema
from .load import _describe, _yaml_key


@functools.lru_cache(maxsize=1)
def field_docs() -> dict[str, dict[str, str]]:
    """``{class name: {field name: docstring}}`` for every dataclass in :mod:`.schema`."""
    tree = ast.parse(Path(schema.__file__).read_text(encoding="utf-8"))
    out: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        docs = out.setdefault(node.name, {})
        for stmt, after in zip(node.body, node.body[1:]):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[stmt.target.id] = inspect.cleandoc(after.value.value)
    return out


def _comment(text: str, pad: str) -> list[str]:
    return [f"{pad}# {line}".rstrip() for line in text.splitlines()]


def _list_item_type(hint) -> type | None:
    """The dataclass of a ``list[Section]`` field (``grpo.rewards``), else None."""
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return item if dataclasses.is_dataclass(item) else None
    return None


def _section(obj, pad: str) -> list[str]:
    cls = type(obj)
    docs = field_docs().get(cls.__name__, {})
    hints = typing.get_type_hints(cls)
    lines: list[str] = []
    for f in dataclasses.fields(cls):
        value, key = getattr(obj, f.name), _yaml_key(f.name)
        if dataclasses.is_dataclass(value):
            if not pad and lines:
                lines.append("")
            lines += _comment(inspect.cleandoc(type(value).__doc__ or key), pad)
            lines.append(f"{pad}{key}:")
            lines += _section(value, pad + "  ")
            continue
        lines += _comment(docs.get(f.name) or f"({_describe(hints[f.name])})", pad)
        item = _list_item_type(hints[f.name])
        if item is not None:
            lines += _comment(f"Each item: {inspect.cleandoc(item.__doc__ or '')}", pad)
            item_docs = field_docs().get(item.__name__, {})
            for g in dataclasses.fields(item):
                default = config_to_dict_value(getattr(item(), g.name))
                lines.append(f"{pad}#   {_yaml_key(g.name)}: {_inline(default)}")
                lines += [
                    f"{pad}#       {line}".rstrip() for line in (item_docs.get(g.name) or "").splitlines()
                ]
        lines.append(f"{pad}{key}: {_inline(config_to_dict_value(value))}")
    return lines


def config_to_dict_value(value):
    """A field's value as plain YAML data (sections inside lists as mappings)."""
    if isinstance(value, list):
        return [config_to_dict_value(v) for v in value]
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return value


def _inline(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def commented_config(config: schema.RunConfig | None = None) -> str:
    """``config`` (default: every default) as YAML, each key under its description."""
    config = config or schema.RunConfig()
    head = _comment(
        "tunesmith run config: every key with its default. Keys left out keep these defaults;\n"
        "`tunesmith train CONFIG --set section.key=value` overrides one. docs/training.md explains them.",
        "",
    )
    return "\n".join(head + [""] + _section(config, "")) + "\n"


__all__ = ["commented_config", "field_docs"]
