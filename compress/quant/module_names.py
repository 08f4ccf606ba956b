"""The torch module each ONNX node came from, as the user's model names it
(`encoder.layer.3.output.dense`, `blocks.15.conv_pwl`), and `exclude` lists that take node
names, op types, module names and globs.

The dynamo exporter records, on every node it writes, the module path that called the op
(`pkg.torch.onnx.name_scopes`: `['', 'model', 'model.model', ..., 'model.model.encoder.layer.0
.output.dense', 'linear_5']`, the last entry the op itself) and each scope's class
(`pkg.torch.onnx.class_hierarchy`). compress wraps the user's model before exporting it (tensor
outputs, a folder's task head), so the scopes of its own classes are stripped: what is left is
the name `model.named_modules()` gives. A graph from elsewhere, or the older exporter, records
none, and its nodes keep their ONNX names. Quantizers and ORT's optimizer drop the metadata of
the nodes they rewrite, so the names are read from the pass's input, by node name.
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
from pathlib import Path

from compress.errors import ConfigError

SCOPES = "pkg.torch.onnx.name_scopes"
CLASSES = "pkg.torch.onnx.class_hierarchy"
OWN = "compress."  # classes of compress's own wrappers around the user's model


def module_of(node) -> str | None:
    """The user's module that wrote `node` (a NodeProto), or None when the export recorded none
    (or the op ran in compress's own wrapper)."""
    props = {p.key: p.value for p in node.metadata_props}
    if SCOPES not in props:
        return None
    try:
        scopes = ast.literal_eval(props[SCOPES])
        classes = ast.literal_eval(props.get(CLASSES) or "[]")
    except (ValueError, SyntaxError):
        return None
    if not isinstance(scopes, list) or len(scopes) < 2:
        return None
    module = scopes[-2]  # the last entry is the op
    wrappers = [i for i, c in enumerate(classes[: len(scopes) - 1]) if str(c).startswith(OWN)]
    if wrappers:  # the user's model is the module the innermost wrapper holds
        root = wrappers[-1] + 1
        if root >= len(scopes) - 1 or module == scopes[root]:
            return None
        module = module[len(scopes[root]) + 1 :]
    return module or None


def module_names(path: Path) -> dict[str, str]:
    """Node name -> module, for the nodes of the ONNX file `path` whose module was recorded."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {n.name: m for n in graph.node if n.name and (m := module_of(n)) is not None}


def shown(node: str, modules: dict[str, str]) -> str:
    """How a report names `node`: its module where known, with the node when the module wrote
    several of the nodes named (`modules`: node -> module)."""
    module = modules.get(node)
    if module is None:
        return node
    shared = sum(1 for m in modules.values() if m == module) > 1
    return f"{module} ({node})" if shared else module


def resolve_exclude(graph, entries: list[str], key: str, modules: dict[str, str]) -> list[str]:
    """The node names of `graph` that `entries` name: node names, op types, module names (a
    module takes its submodules' nodes with it) and fnmatch globs over node and module names.
    An entry that names nothing is refused, naming it."""
    nodes = [n for n in graph.node if n.name]
    chosen: list[str] = []
    for entry in entries:
        matched = [n.name for n in nodes if _matches(entry, n, modules.get(n.name))]
        if not matched:
            raise ConfigError(
                f"{key}.exclude: {entry!r} matches no node{_hint(entry, nodes, modules)}"
            )
        chosen += [name for name in matched if name not in chosen]
    return [n.name for n in nodes if n.name in chosen]


def _matches(entry: str, node, module: str | None) -> bool:
    if entry in (node.name, node.op_type):
        return True
    if module is not None and (module == entry or module.startswith(entry + ".")):
        return True
    if any(c in entry for c in "*?["):
        return fnmatch.fnmatchcase(node.name, entry) or (
            module is not None and fnmatch.fnmatchcase(module, entry)
        )
    return False


def _hint(entry: str, nodes, modules: dict[str, str]) -> str:
    names = {n.name for n in nodes} | {n.op_type for n in nodes} | set(modules.values())
    close = difflib.get_close_matches(entry, sorted(names), n=3, cutoff=0.4)
    kinds = "node name, op type, module name or glob"
    return f" (a {kinds}); close names: {', '.join(close)}" if close else f" (a {kinds})"
