"""Parsing JSON text that came from outside (request bodies, data-file lines) without surprises.

``json.loads`` can fail in three ways besides :class:`json.JSONDecodeError`: ``RecursionError``
for deeply nested input (``[`` × 5000), ``ValueError`` for an integer of more than 4,300 digits
(CPython's integer-string conversion limit), and it accepts ``NaN`` / ``Infinity``, which are not
JSON, and ``"\ud800"``, an unpaired UTF-16 surrogate: valid JSON but not text (tokenizers reject
it, and a reply echoing it cannot be encoded as UTF-8). :func:`loads` turns all of them into
:class:`BadJSON`, a ``JSONDecodeError`` subclass, so
every caller's existing ``except json.JSONDecodeError`` names the file, line or field as before,
and it also refuses nesting deeper than ``max_depth`` (no legitimate request or example needs
more, and code that walks parsed values recursively stays far from Python's recursion limit).
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 100
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # only such an escape can leave one behind
_SURROGATE = re.compile("[\ud800-\udfff]")  # in a decoded string: an unpaired half (pairs were joined)


class BadJSON(json.JSONDecodeError):
    """Input that is not acceptable JSON for a reason ``json`` itself does not report."""


def loads(
    text: str | bytes, *, max_depth: int = MAX_DEPTH, allow_nan: bool = True, allow_surrogates: bool = False
) -> Any:
    """``json.loads(text)``; :class:`BadJSON` (a JSONDecodeError) for too deep nesting, over-long
    integers, unpaired surrogates (unless ``allow_surrogates``: a caller that reports them with
    more precision itself) and, with ``allow_nan=False``, the non-standard constants NaN / Infinity."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")  # UnicodeDecodeError is left to the caller, as json.loads does
    kwargs = {} if allow_nan else {"parse_constant": _no_constant}
    try:
        value = json.loads(text, **kwargs)
    except RecursionError:
        raise BadJSON(f"nested more than {max_depth} levels deep", text, 0) from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # int() over the digit limit; NaN refused by _no_constant
        raise BadJSON(str(exc).split(";")[0], text, 0) from None
    if depth(value) > max_depth:
        raise BadJSON(f"nested more than {max_depth} levels deep", text, 0)
    if (
        not allow_surrogates
        and _SURROGATE_ESCAPE.search(text)
        and any(_SURROGATE.search(s) for s in strings(value))
    ):
        raise BadJSON("a \\u escape is an unpaired UTF-16 surrogate, which is not text", text, 0)
    return value


def strings(value: Any):
    """Every string in a parsed value, dict keys included; no recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def depth(value: Any) -> int:
    """Nesting depth of a parsed value (a scalar is 0, ``[]`` is 1), computed without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            deepest = max(deepest, level)
            continue
        deepest = max(deepest, level + 1)
        stack.extend((child, level + 1) for child in children)
    return deepest


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid JSON number")
