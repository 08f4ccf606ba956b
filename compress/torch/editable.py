"""A torch module that passes may change (prune, fine-tune), made from any loaded format.

state_dicts + arch and trusted pickled modules already are such modules. A `.pt2` program's
`.module()` is a GraphModule whose layers were flattened into aten calls on bare parameters, so
pruning could not see them: `relift` puts real `nn.Conv2d` / `nn.Linear` / `nn.BatchNorm2d` /
`nn.LayerNorm` / `nn.Embedding` layers back in place of those calls, with the same parameters and
the same state_dict keys. A TorchScript archive cannot be changed this way and is refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from compress.errors import ModelLoadError
from compress.models import LoadedModel


def editable_module(model: LoadedModel, needed_by: str):
    """An nn.Module that `needed_by` (e.g. "passes[0] (prune.channels)") may change in place."""
    if model.format == "torchscript":
        raise ModelLoadError(
            f"{needed_by} changes the model's layers, which a TorchScript archive "
            f"({model.path.name}) does not allow; give the model as a .pt2 (torch.export.save), "
            "a state_dict with model.arch, or a whole pickled module with --trust-pickle"
        )
    if model.format == "exported_program":
        return relift(model.model.module())
    return model.model


def relift(graph_module):
    """The GraphModule with each aten layer call on its own parameters made a real layer again."""
    import torch

    graph = graph_module.graph
    uses = Counter(
        source.target
        for node in graph.nodes
        for source in node.all_input_nodes
        if source.op == "get_attr"
    )
    _drop_empty_concats(graph_module)
    _relift_transposed_linears(graph_module, uses)
    _relift_tied_embedding(graph_module, uses)
    builders = _builders()
    for node in list(graph.nodes):
        build = builders.get(node.target) if node.op == "call_function" else None
        if build is None:
            continue
        layer, layer_input, tensors = build(graph_module, node)
        targets = {name: source.target for name, source in tensors.items() if source is not None}
        owners = {target.rpartition(".")[0] for target in targets.values()}
        if len(owners) != 1 or any(uses[t] != 1 for t in targets.values()) or "" in owners:
            continue  # shared or top-level weights: leave the call as it is
        owner = owners.pop()
        _move_tensors(graph_module, owner, layer, targets)
        with graph.inserting_before(node):
            call = graph.call_module(owner, (layer_input,))
        call.meta.update(node.meta)  # the shape it was saved with (compress.torch.program_shapes)
        node.replace_all_uses_with(call)
        graph.erase_node(node)
    for node in list(graph.nodes):  # shape guards of the saved program; pruning keeps inputs
        if node.op == "call_module" and node.target == "_guards_fn":
            graph.erase_node(node)
    graph.eliminate_dead_code()
    # A plain GraphModule: the one `.module()` returns refuses .train() and .eval().
    return torch.fx.GraphModule(graph_module, graph).eval()


def _drop_empty_concats(graph_module) -> None:
    """Drop constant empty tensors from concatenations (an unused key/value cache saved with the
    program, which `cat` skips): the concatenation hides its single real operand from pruning."""
    import torch

    from compress.torch.program_attention import op_name

    copies = {"lift_fresh_copy", "detach_", "detach", "clone", "alias", "_to_copy", "to"}

    def empty(node) -> bool:
        """A constant with no elements, maybe behind copies of it (what a saved cache is)."""
        while (
            isinstance(node, torch.fx.Node)
            and node.op == "call_function"
            and op_name(node) in copies
            and node.args
        ):
            node = node.args[0]
        return (
            isinstance(node, torch.fx.Node)
            and node.op == "get_attr"
            and _lookup(graph_module, str(node.target)).numel() == 0  # get_attr: a path
        )

    for node in list(graph_module.graph.nodes):
        if node.op != "call_function" or node.target != torch.ops.aten.cat.default:
            continue
        kept = [part for part in node.args[0] if not empty(part)]
        if len(kept) == len(node.args[0]) or not kept:
            continue
        if len(kept) == 1:
            node.replace_all_uses_with(kept[0])
            graph_module.graph.erase_node(node)
        else:
            node.args = (kept, *node.args[1:])


def _relift_transposed_linears(graph_module, uses: Counter) -> None:
    """transformers' `Conv1D` (GPT-2) exports as `view(addmm(b, view(x, [-1, in]), W), [..., out])`
    with W stored [in, out]: make each an `nn.Linear` on x (weight W transposed), which drops the
    two reshapes and the fixed widths they hold."""
    import torch

    aten = torch.ops.aten
    reshapes = (aten.view.default, aten.reshape.default)
    for node in list(graph_module.graph.nodes):
        if node.op != "call_function" or node.target != aten.addmm.default or node.kwargs:
            continue
        bias, flat, weight = node.args
        users = list(node.users)
        if not (
            bias.op == weight.op == "get_attr"
            and flat.op == "call_function"
            and flat.target in reshapes
            and len(users) == 1
            and users[0].target in reshapes
            and bias.target.rpartition(".")[0] == weight.target.rpartition(".")[0]
            and uses[bias.target] == uses[weight.target] == 1
        ):
            continue
        owner = weight.target.rpartition(".")[0]
        if not owner:
            continue
        w, b = _lookup(graph_module, weight.target), _lookup(graph_module, bias.target)
        layer = torch.nn.Linear(w.shape[0], w.shape[1])
        layer.weight = torch.nn.Parameter(w.detach().t().contiguous(), w.requires_grad)
        layer.bias = b
        parent, _, leaf = owner.rpartition(".")
        setattr(graph_module.get_submodule(parent) if parent else graph_module, leaf, layer)
        with graph_module.graph.inserting_before(node):
            call = graph_module.graph.call_module(owner, (flat.args[0],))
        call.meta.update(users[0].meta)
        users[0].replace_all_uses_with(call)
        for dead in (users[0], node, flat):
            if not dead.users:
                graph_module.graph.erase_node(dead)


def _relift_tied_embedding(graph_module, uses: Counter) -> None:
    """A weight shared by an embedding and the output projection (GPT-2's tied LM head): an
    `nn.Linear` at the weight's owner and an `nn.Embedding` beside it (`<owner>_embedding`), both
    on the one Parameter, so pruning sees two layers and not a bare matmul into the output."""
    import torch

    aten = torch.ops.aten
    for weight in [n for n in graph_module.graph.nodes if n.op == "get_attr"]:
        users = {user.target: user for user in weight.users if user.op == "call_function"}
        lookup, linear = users.get(aten.embedding.default), users.get(aten.linear.default)
        if uses[weight.target] != 2 or lookup is None or linear is None:
            continue
        owner, _, name = weight.target.rpartition(".")
        bias = _arg(linear, 2)
        if (
            not owner
            or name != "weight"
            or lookup.args[0] is not weight
            or linear.args[1] is not weight
            or _arg(lookup, 2, -1) != -1
            or (bias is not None and (bias.op != "get_attr" or uses[bias.target] != 1))
        ):
            continue
        table = _lookup(graph_module, weight.target)
        layer = torch.nn.Linear(table.shape[1], table.shape[0], bias=bias is not None)
        embedding = torch.nn.Embedding(*table.shape)
        layer.weight = embedding.weight = table
        if bias is not None:
            layer.bias = _lookup(graph_module, bias.target)
        parent, _, leaf = owner.rpartition(".")
        container = graph_module.get_submodule(parent) if parent else graph_module
        setattr(container, leaf, layer)
        setattr(container, f"{leaf}_embedding", embedding)
        graph = graph_module.graph
        for node, target, source in (
            (lookup, f"{owner}_embedding", lookup.args[1]),
            (linear, owner, linear.args[0]),
        ):
            with graph.inserting_before(node):
                call = graph.call_module(target, (source,))
            call.meta.update(node.meta)
            node.replace_all_uses_with(call)
            graph.erase_node(node)


def _move_tensors(root, owner: str, layer, targets: dict[str, str]) -> None:
    """Hand the owner's parameters and buffers to `layer` and put `layer` at the owner's path."""
    import torch

    container = root.get_submodule(owner)
    for name, target in targets.items():
        value = _lookup(root, target)
        if isinstance(value, torch.nn.Parameter):
            setattr(layer, name, value)
        else:
            layer.register_buffer(name, value)
    tracked = getattr(container, "num_batches_tracked", None)
    if tracked is not None and hasattr(layer, "num_batches_tracked"):
        layer.num_batches_tracked = tracked
    parent, _, leaf = owner.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, layer)


def _lookup(root, target: str):
    owner, _, name = target.rpartition(".")
    return getattr(root.get_submodule(owner) if owner else root, name)


def _arg(node, index: int, default=None):
    return node.args[index] if len(node.args) > index else default


def _weight(root, node, index: int = 1):
    return _lookup(root, node.args[index].target) if node.args[index].op == "get_attr" else None


def _conv(dims: int) -> Callable:
    def build(root, node):
        import torch

        weight, bias = _weight(root, node), _arg(node, 2)
        if weight is None or isinstance(_arg(node, 4), str):  # padding="same": leave it
            return None, None, {}
        groups = _arg(node, 6, 1)
        layer = getattr(torch.nn, f"Conv{dims}d")(
            weight.shape[1] * groups,
            weight.shape[0],
            tuple(weight.shape[2:]),
            stride=_arg(node, 3, 1),
            padding=_arg(node, 4, 0),
            dilation=_arg(node, 5, 1),
            groups=groups,
            bias=bias is not None,
        )
        return layer, node.args[0], {"weight": node.args[1], "bias": bias}

    return build


def _linear(root, node):
    import torch

    weight, bias = _weight(root, node), _arg(node, 2)
    if weight is None:
        return None, None, {}
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    return layer, node.args[0], {"weight": node.args[1], "bias": bias}


def _batch_norm(root, node):
    import torch

    x, weight, bias, mean, var = node.args[:5]
    if mean is None or mean.op != "get_attr" or weight is None or _arg(node, 5):
        return None, None, {}
    channels = _lookup(root, mean.target).shape[0]
    dims = x.meta["val"].dim() if "val" in x.meta else 4
    cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 5: torch.nn.BatchNorm3d}.get(
        dims, torch.nn.BatchNorm2d
    )
    layer = cls(channels, eps=_arg(node, 7, 1e-5), momentum=_arg(node, 6, 0.1))
    return layer, x, {"weight": weight, "bias": bias, "running_mean": mean, "running_var": var}


def _layer_norm(root, node):
    import torch

    x, shape, weight, bias = (*node.args, None, None)[:4]
    if weight is None or weight.op != "get_attr":
        return None, None, {}
    layer = torch.nn.LayerNorm(shape, eps=_arg(node, 4, 1e-5), bias=bias is not None)
    return layer, x, {"weight": weight, "bias": bias}


def _embedding(root, node):
    import torch

    if node.args[0].op != "get_attr" or _arg(node, 2, -1) != -1:
        return None, None, {}
    table = _lookup(root, node.args[0].target)
    return torch.nn.Embedding(*table.shape), node.args[1], {"weight": node.args[0]}


def _builders() -> dict:
    import torch

    aten = torch.ops.aten
    return {
        aten.conv1d.default: _conv(1),
        aten.conv2d.default: _conv(2),
        aten.conv3d.default: _conv(3),
        aten.linear.default: _linear,
        aten.batch_norm.default: _batch_norm,
        aten.layer_norm.default: _layer_norm,
        aten.embedding.default: _embedding,
    }
