"""The multi grader's ``calculate_output`` formula: a tiny arithmetic language, never ``eval``.

OpenAI documents these for ``calculate_output``: the operators ``+ - * / ^`` (``^`` is power)
and the functions ``min max abs floor ceil exp sqrt log``, over number literals and the names of
the multi grader's sub-graders. That is exactly what :func:`parse_formula` accepts; ``**`` is
also accepted as power. ``log`` is the natural logarithm; ``min``/``max`` take one or more
arguments, the others exactly one.

How: the text is parsed with Python's :mod:`ast` (after turning ``^`` into ``**``: the formula
has no strings or other operators that could contain a ``^``, and ``**`` gives power its usual
precedence, ``-a^2 == -(a^2)``, ``2^3^2 == 2^9``) and the tree is checked node by node against
a whitelist: numbers, sub-grader names, the binary operators above, unary ``+``/``-``, and calls
of the listed functions by plain name. Anything else (attribute access, subscripts, strings,
comparisons, lambdas, keyword arguments, unknown names) is rejected with a
:class:`~tunesmith.graders.spec.GraderError` when the grader is parsed, so a bad formula never
reaches a training step.

Evaluation is in floats (a literal ``9^9^9`` overflows to an error instead of building a huge
integer); division by zero, a math domain error (``sqrt(-1)``, ``log(0)``) or a non-finite result
is a :class:`FormulaError` for that sample.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import TunesmithError

MAX_FORMULA_CHARS = 1000

FUNCTIONS: dict[str, tuple[Callable[..., float], int | None]] = {
    # name: (function, fixed arity or None for "one or more")
    "min": (lambda *xs: min(xs), None),
    "max": (lambda *xs: max(xs), None),
    "abs": (abs, 1),
    "floor": (lambda x: float(math.floor(x)), 1),
    "ceil": (lambda x: float(math.ceil(x)), 1),
    "exp": (math.exp, 1),
    "sqrt": (math.sqrt, 1),
    "log": (math.log, 1),
}

_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
}
_UNARY = {ast.UAdd: lambda a: +a, ast.USub: lambda a: -a}


class FormulaSyntaxError(TunesmithError):
    """A formula outside the allowed language (the message says which part)."""


class FormulaError(TunesmithError):
    """A valid formula that has no finite value for these scores (division by zero …)."""


@dataclass(frozen=True)
class Formula:
    """A checked formula; :meth:`evaluate` gives its value for a set of sub-grader scores."""

    text: str
    tree: ast.expr
    names: frozenset[str]

    def evaluate(self, scores: dict[str, float]) -> float:
        """The formula's value; :class:`FormulaError` if it is not a finite number."""
        try:
            value = _evaluate(self.tree, scores)
        except ZeroDivisionError:
            raise FormulaError(f"calculate_output {self.text!r}: division by zero") from None
        except (OverflowError, ValueError, TypeError) as exc:
            raise FormulaError(f"calculate_output {self.text!r}: {exc}") from None
        if isinstance(value, complex) or not math.isfinite(value):
            raise FormulaError(
                f"calculate_output {self.text!r} is not a finite real number for scores {scores}"
            )
        return float(value)


def parse_formula(text: str, names: set[str] | frozenset[str]) -> Formula:
    """Check ``text`` against the formula language with ``names`` as its variables."""
    if not isinstance(text, str) or not text.strip():
        raise FormulaSyntaxError("must be a non-empty formula such as '0.5 * a + 0.5 * b'")
    if len(text) > MAX_FORMULA_CHARS:
        raise FormulaSyntaxError(f"is {len(text)} characters long; the limit is {MAX_FORMULA_CHARS}")
    try:
        tree = ast.parse(text.strip().replace("^", "**"), mode="eval").body
        _check(tree, frozenset(names))
    except SyntaxError as exc:
        raise FormulaSyntaxError(f"{text!r} is not a valid formula ({exc.msg})") from None
    except (RecursionError, MemoryError):
        raise FormulaSyntaxError(f"{text!r} is nested too deeply") from None
    used = frozenset(
        node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and node.id not in FUNCTIONS
    )
    return Formula(text, tree, used)


def _check(node: ast.AST, names: frozenset[str]) -> None:
    if isinstance(node, ast.Constant):
        if type(node.value) not in (int, float):
            raise FormulaSyntaxError(f"only numbers may appear as literals, not {node.value!r}")
    elif isinstance(node, ast.Name):
        if node.id not in names:
            known = ", ".join(sorted(names)) or "none"
            hint = " (a function name must be called)" if node.id in FUNCTIONS else ""
            raise FormulaSyntaxError(f"unknown name {node.id!r}{hint}; the sub-graders are: {known}")
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise FormulaSyntaxError(f"operator {_op_text(node.op)} is not allowed; use + - * / ^")
        _check(node.left, names)
        _check(node.right, names)
    elif isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY:
            raise FormulaSyntaxError(f"operator {_op_text(node.op)} is not allowed")
        _check(node.operand, names)
    elif isinstance(node, ast.Call):
        func = node.func
        if not isinstance(func, ast.Name) or func.id not in FUNCTIONS:
            shown = func.id if isinstance(func, ast.Name) else ast.unparse(func)
            raise FormulaSyntaxError(
                f"call of {shown!r} is not allowed; the functions are: {', '.join(FUNCTIONS)}"
            )
        if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
            raise FormulaSyntaxError(f"{func.id}() takes plain positional arguments only")
        arity = FUNCTIONS[func.id][1]
        if (arity is None and not node.args) or (arity is not None and len(node.args) != arity):
            wanted = "one or more arguments" if arity is None else f"{arity} argument"
            raise FormulaSyntaxError(f"{func.id}() takes {wanted}, got {len(node.args)}")
        for arg in node.args:
            _check(arg, names)
    else:
        raise FormulaSyntaxError(
            f"{type(node).__name__} ({ast.unparse(node)!r}) is not "
            "allowed; only numbers, sub-grader names, + - * / ^, "
            "parentheses and min/max/abs/floor/ceil/exp/sqrt/log"
        )


def _evaluate(node: ast.expr, scores: dict[str, float]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(scores[node.id])
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, scores), _evaluate(node.right, scores))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, scores))
    if isinstance(node, ast.Call):
        return float(FUNCTIONS[node.func.id][0](*(_evaluate(a, scores) for a in node.args)))
    raise AssertionError(f"unchecked node {type(node).__name__}")  # _check rejects these


def _op_text(op: ast.AST) -> str:
    return {
        ast.Mod: "%",
        ast.FloorDiv: "//",
        ast.BitAnd: "&",
        ast.BitOr: "|",
        ast.LShift: "<<",
        ast.RShift: ">>",
        ast.MatMult: "@",
        ast.Not: "not",
        ast.Invert: "~",
        ast.BitXor: "^",
    }.get(type(op), type(op).__name__)
