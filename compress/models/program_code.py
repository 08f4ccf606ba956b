"""The strings of a torch.export program (`models/model.json`) that torch turns into Python code,
checked against the narrow form torch.export.save writes them in, before torch reads them.

torch 2.13 evaluates some of a program's strings while loading or running it:
  - symbolic sizes (`expr_str`) go through sympy.sympify, which calls eval (at load);
  - `guards_code` is exec'd into the module's guard function (run on every call);
  - torch.fx writes node targets, tensor names, keyword names and the forward's argument names
    into the source of the module it generates and execs (at load and at `.module()`).
A string in any other form is refused; nothing here imports, evaluates or unpickles.
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
from collections.abc import Iterator

MAX_CODE_STRING = 10_000  # characters in one expression; real ones are under a few hundred


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Call targets torch.export.save writes: operators, higher-order operators, and the pure
# symbolic-size functions it lists in torch._export.serde.serialize._SYM_OPS.
_TORCH_OP = re.compile(r"torch\.ops\.[A-Za-z_]\w*(\.[A-Za-z_]\w*){1,2}")
_SYM_TARGETS = frozenset(
    [f"_operator.{n}" for n in _words("eq ne le ge lt gt neg pos mul add sub floordiv mod pow")]
    + [f"_operator.{n}" for n in _words("truediv and_ or_ lshift rshift getitem")]
    + ["math.trunc"]
    + [f"torch.sym_{n}" for n in _words("not int float ite max min sqrt")]
)
# Functions a symbolic size may call: sympy's (as srepr writes them) and torch's own.
_SYMPY_CALLS = _words(
    """Symbol Integer Float Rational Add Mul Pow Mod Max Min Abs floor ceiling sqrt Eq Ne Lt Le
    Gt Ge Equality Unequality StrictLessThan LessThan StrictGreaterThan GreaterThan And Or Not
    Piecewise ExprCondPair Tuple Infinity NegativeInfinity IntInfinity NegativeIntInfinity
    FloorDiv ModularIndexing Where PythonMod CleanDiv CeilToInt FloorToInt CeilDiv LShift
    RShift PowByNatural FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator
    TruncToFloat TruncToInt RoundToInt RoundDecimal ToFloat Identity"""
)
_SYMPY_NAMES = _words("oo zoo nan true false True False None")
# What a guard may name and call: the inputs (L), sizes and strides, and pure arithmetic.
_GUARD_NAMES = _words(
    "L math inf max min abs IsNonOverlappingAndDenseIndicator cast_symbool_to_symint_guardless"
)
_GUARD_METHODS = _words("size stride storage_offset dim numel")
_ARITHMETIC = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp,
    ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.Load, ast.Tuple,
)  # fmt: skip
_UNSAFE_LITERAL = re.compile(r"[\"'\\\x00-\x1f\x7f]")  # could end a string literal or a line


def program_code_problem(program: dict) -> str | None:
    """'WHERE: WHAT' for the first string torch would run as code in a form torch.export.save
    does not write; None when there is none."""
    for where, problem in _problems(program, ""):
        return f"{where}: {problem}"
    return None


def _problems(value, where: str) -> Iterator[tuple[str, str]]:
    """Walks the JSON: each key picks the rule for the strings under it."""
    stack = [(value, where)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, list):
            stack.extend((item, f"{where}[{i}]") for i, item in enumerate(value))
            continue
        if isinstance(value, str):
            if _UNSAFE_LITERAL.search(value):
                yield where, f"{value[:60]!r} has a quote, backslash or control character"
            continue
        if not isinstance(value, dict):
            continue
        for key, item in value.items():
            at = f"{where}.{key}" if where else key
            problem = _key_problem(key, item, value)
            if problem:
                yield at, problem
            elif key in _RULES:
                yield from ((at, p) for p in _RULES[key](item))
            elif key not in _FREE_TEXT:
                stack.append((item, at))


def _key_problem(key, item, parent: dict) -> str | None:
    if not isinstance(key, str) or _UNSAFE_LITERAL.search(key):
        return "a key with a quote, backslash or control character"
    is_node_target = key == "target" and "inputs" in parent and isinstance(item, str)
    if is_node_target and not _written_target(item):
        return f"calls {item[:80]!r}, which is not an operator torch.export.save writes"
    return None


def _written_target(target: str) -> bool:
    """One of the symbolic-size functions, or torch.ops.<namespace>.<op>[.<overload>] that
    resolves, as torch resolves it, to an operator: the pattern alone would also reach
    torch.ops.load_library.__func__, which loads a shared library when the graph runs."""
    if target in _SYM_TARGETS:
        return True
    if not _TORCH_OP.fullmatch(target):
        return False
    import torch

    resolved = torch.ops
    try:  # attribute lookups in torch's operator registry: nothing from the file runs
        for name in target.split(".")[2:]:
            resolved = getattr(resolved, name)
    except Exception:
        return False
    operators = (torch._ops.OpOverload, torch._ops.OpOverloadPacket, torch._ops.HigherOrderOperator)
    return isinstance(resolved, operators)


def _identifiers(item) -> Iterator[str]:
    """Names torch.fx writes into code as they are: they must be Python identifiers."""
    for name in item if isinstance(item, list) else [item]:
        if name is not None and (not isinstance(name, str) or not _identifier_or_empty(name)):
            yield f"{str(name)[:60]!r} is not a Python identifier"


def _identifier_or_empty(name: str) -> bool:
    return name == "" or name.isidentifier()


def _spec(item) -> Iterator[str]:
    """A pytree spec: JSON in a string, whose `context` strings are JSON again."""
    try:
        spec = json.loads(item) if isinstance(item, str) else item
    except ValueError:
        yield "is not JSON"
        return
    stack = [spec]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            context = value.get("context")
            if isinstance(context, str):
                with contextlib.suppress(ValueError):  # else checked as the string it is
                    value = {**value, "context": json.loads(context)}
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and _UNSAFE_LITERAL.search(value):
            yield f"names {value[:60]!r}, which has a quote, backslash or control character"


def _sympy_expr(item) -> Iterator[str]:
    problem = _expression_problem(item, _sympy_node_problem)
    if problem:
        yield problem


def _guards(item) -> Iterator[str]:
    for i, guard in enumerate(item if isinstance(item, list) else [item]):
        problem = _expression_problem(guard, _guard_node_problem)
        if problem:
            yield f"[{i}] {problem}"


def _expression_problem(text, node_problem) -> str | None:
    if not isinstance(text, str) or len(text) > MAX_CODE_STRING:
        return "is not a string of a sensible length"
    if re.search(r"[\"\\#\x00-\x1f\x7f]", text):  # torch pastes guards into a "..." literal
        return f"{text[:80]!r} has a double quote, backslash, '#' or control character"
    try:
        tree = ast.parse(text, mode="eval")
        problem = next(filter(None, map(node_problem, ast.walk(tree))), None)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return f"{text[:80]!r} is not an expression"
    return f"{text[:80]!r} {problem}" if problem else None


def _sympy_node_problem(node: ast.AST) -> str | None:
    """sympify evaluates the text: only sympy's constructors may be called, on plain values."""
    if isinstance(node, ast.keyword):
        return None if node.arg else "has ** arguments"
    if isinstance(node, _ARITHMETIC):
        return None
    if isinstance(node, ast.Call):
        if not (isinstance(node.func, ast.Name) and node.func.id in _SYMPY_CALLS):
            return f"calls {ast.unparse(node.func)[:40]}, which is not a sympy constructor"
        return None
    if isinstance(node, ast.Name):
        ok = node.id in _SYMPY_CALLS | _SYMPY_NAMES or re.fullmatch(r"[a-z]+\d+", node.id)
        return None if ok else f"names {node.id!r}"
    if isinstance(node, ast.Constant):
        return None if isinstance(node.value, int | float | str | bool | None) else "a constant"
    return f"has a {type(node).__name__}, which a symbolic size does not"


def _guard_node_problem(node: ast.AST) -> str | None:
    """A guard compares input sizes: L['x'].size()[0] <= 1024, max(1, ...) == 4, ..."""
    if isinstance(node, (*_ARITHMETIC, ast.Subscript, ast.Constant)):
        return None
    if isinstance(node, ast.Name):
        return None if node.id in _GUARD_NAMES else f"names {node.id!r}"
    if isinstance(node, ast.Attribute):
        return None if not node.attr.startswith("_") else f"reads .{node.attr}"
    if isinstance(node, ast.Call):
        func = node.func
        if node.keywords:
            return "passes keyword arguments"
        if isinstance(func, ast.Name) and func.id in _GUARD_NAMES:
            return None
        if isinstance(func, ast.Attribute) and (
            func.attr in _GUARD_METHODS
            or (isinstance(func.value, ast.Name) and func.value.id == "math")
        ):
            return None
        return f"calls {ast.unparse(func)[:40]}, which a guard does not"
    return f"has a {type(node).__name__}, which a guard does not"


_RULES = {
    "expr_str": _sympy_expr,
    "guards_code": _guards,
    "in_spec": _spec,
    "out_spec": _spec,
    "forward_arg_names": _identifiers,
    "name": _identifiers,
    "as_name": _identifiers,
    "as_names": _identifiers,
}
# Read as data only (messages, stack traces, strings passed to operators through repr).
_FREE_TEXT = frozenset(["metadata", "as_string", "as_strings"])
