"""Find reshapes that split the channel dimension into groups (ShuffleNet's channel shuffle:
`x.view(b, groups, c // groups, h, w)`). torch-pruning's dependency graph cannot follow them (it
fails with "integer division or modulo by zero"), so `prune.channels` refuses such a model before
any work and names the modules whose code does it."""

from __future__ import annotations

from compress.torch.module_names import is_torch_layer, running_modules

RESHAPES = ("view", "reshape", "unflatten")


def channel_split_modules(model, inputs: tuple) -> list[str]:
    """Names of the modules (innermost whose class is not torch's own) that reshape dimension 1
    of a tensor of 3 or more dimensions into two dimensions, in the order they run."""
    import torch
    from torch.overrides import TorchFunctionMode

    if isinstance(model, torch.fx.GraphModule):  # a relifted .pt2: read its graph's shapes
        from torch.fx.passes.shape_prop import ShapeProp

        with torch.no_grad():
            ShapeProp(model).propagate(*inputs)
        return _graph_channel_splits(model)
    names = {m: name for name, m in model.named_modules()}
    found: list[str] = []

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if _is_reshape(func) and _splits_channels(args[0], out):
                owner = next((m for m in reversed(running) if not is_torch_layer(m)), model)
                if names[owner] not in found:
                    found.append(names[owner])
            return out

    with running_modules(model) as running, torch.no_grad(), Watch():
        model(*inputs)
    return found


def _graph_channel_splits(graph_module) -> list[str]:
    """The same, read off an exported graph: each reshape node's input and output shapes (the
    `tensor_meta` ShapeProp gave them) and the module it came from (its `nn_module_stack`,
    innermost last)."""
    found: list[str] = []
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or not _is_reshape(node.target) or not node.args:
            continue
        source = getattr(node.args[0], "meta", {}).get("tensor_meta")
        if _splits_shape(getattr(source, "shape", ()), node.meta["tensor_meta"].shape):
            stack = list((node.meta.get("nn_module_stack") or {}).values())
            name = stack[-1][0] if stack else ""
            if name not in found:
                found.append(name)
    return found


def _is_reshape(func) -> bool:
    """A Python-level reshape (`Tensor.view`) or its aten op (`aten.view.default`)."""
    return getattr(func, "__name__", "").split(".")[0] in RESHAPES


def _splits_channels(source, out) -> bool:
    """`out` is `source` with dimension 1 split in two (groups x channels per group)."""
    import torch

    if not isinstance(source, torch.Tensor) or not isinstance(out, torch.Tensor):
        return False
    return _splits_shape(tuple(source.shape), tuple(out.shape))


def _splits_shape(before: tuple, after: tuple) -> bool:
    before, after = tuple(before), tuple(after)
    if len(before) < 3 or len(after) != len(before) + 1 or after[0] != before[0]:
        return False
    return after[1] > 1 and after[1] * after[2] == before[1] and after[3:] == before[2:]
