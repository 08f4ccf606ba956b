"""The library's import graph, read from its source with `ast` (nothing is imported): which
module imports which, at module level, inside functions, and for type checking only."""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

# The library's layers, lowest first: a module may import its own folder and the folders below
# it, never one above (the pass registry finds pass modules by name, at run time, which is the
# one way up). Top-level modules (compress/errors.py) are folders of one.
LAYERS = (
    "compress",  # the package's __init__: the version, nothing else
    "errors",
    "records",
    "files",
    "progress",
    "config",
    "data",
    "models",
    "measure",
    "torch",
    "passes",
    "quant",
    "report",
    "cache",
    "job",
    "starter",
    "batch",
    "sweep",
)


@dataclass
class ImportGraph:
    modules: set[str] = field(default_factory=set)
    at_import: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    in_functions: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    for_types: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def edges(self, *kinds: dict[str, set[str]]) -> list[tuple[str, str]]:
        return sorted((a, b) for kind in kinds for a, targets in kind.items() for b in targets)

    def all_edges(self) -> list[tuple[str, str]]:
        return self.edges(self.at_import, self.in_functions, self.for_types)


def folder(module: str) -> str:
    """compress.quant.sensitivity.cache -> quant; compress.errors -> errors."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def read_graph(root: Path) -> ImportGraph:
    package = root / "compress"
    names = {_module_name(path, root): path for path in package.rglob("*.py")}
    graph = ImportGraph(modules=set(names))
    for name, path in names.items():
        tree = ast.parse(path.read_text())
        _walk(tree.body, name, path.name == "__init__.py", graph, names, graph.at_import)
    return graph


def circles(edges: list[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected groups of more than one node (Tarjan)."""
    after: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        after[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in after[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted({n for edge in edges for n in edge}):
        if node not in index:
            visit(node)
    return sorted(found)


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _walk(nodes, name: str, is_package: bool, graph: ImportGraph, names, into) -> None:
    for node in nodes:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                _add(inner, name, is_package, names, graph.in_functions)
        elif isinstance(node, ast.ClassDef):
            _walk(node.body, name, is_package, graph, names, into)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            _walk(node.body, name, is_package, graph, names, graph.for_types)
        elif isinstance(node, ast.If | ast.Try | ast.With):
            blocks = [node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])]
            blocks += [handler.body for handler in getattr(node, "handlers", [])]
            for block in blocks:
                _walk(block, name, is_package, graph, names, into)
        else:
            for inner in ast.walk(node):
                _add(inner, name, is_package, names, into)


def _add(node, name: str, is_package: bool, names, into) -> None:
    for target in _targets(node, name, is_package):
        module = _resolve(target, names)
        if module and module != name:
            into[name].add(module)


def _targets(node, name: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    return [f"{module}.{alias.name}" for alias in node.names] + [module]


def _resolve(target: str, names) -> str | None:
    """The longest prefix of `target` that is a module of the library."""
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in names:
            return candidate
    return None
