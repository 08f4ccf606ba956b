"""Attention heads in a `.pt2` program, found in its graph instead of its modules' attributes.

A program (relifted by `compress.torch.editable`) has real `nn.Linear` layers but no attention
modules: attention is a `scaled_dot_product_attention` call (or softmax between two matmuls) fed by
reshapes of the projections' outputs to `[batch, heads, seq, head size]`. Walking back from the
attention's query / key / value through those reshapes finds the projections; the head size is
the last dimension the program recorded for them. A fused `[q | k | v]` projection (GPT-2) shows
up as one Linear split in three; its output projection is the first Linear after the attention.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import torch
    from torch import nn

    from compress.torch.head_pruning import Attention

# Ops that move a projection's channels around without mixing them (reshape into heads, scale).
PASS_THROUGH = {
    "view", "reshape", "_unsafe_view", "transpose", "permute", "contiguous", "clone", "mul",
    "div", "_to_copy", "to", "alias", "expand", "unsqueeze", "flatten",
}  # fmt: skip
SPLITS = {"split", "split_with_sizes", "chunk", "unbind"}


def op_name(node: torch.fx.Node) -> str:
    """'view' for aten.view.default, 'getitem' for operator.getitem."""
    target = node.target
    name = getattr(target, "__name__", str(target))
    return name.split(".")[0]


def _linear(gm: torch.fx.GraphModule, node: torch.fx.Node) -> nn.Linear | None:
    from torch import nn

    if node.op != "call_module":
        return None
    module = gm.get_submodule(str(node.target))  # a call_module's target is its path
    return module if isinstance(module, nn.Linear) else None


class Source(NamedTuple):
    """The Linear call a query / key / value comes from, and the split it went through (fused)."""

    call: torch.fx.Node
    linear: nn.Linear
    split: torch.fx.Node | None


def _source(gm: torch.fx.GraphModule, node: Any) -> Source | None:
    """Where a query / key / value comes from, or None when not from a Linear. (A node's args
    are torch.fx's loosely typed Arguments: read as the graph has them.)"""
    split = None
    while node is not None and node.op == "call_function":
        if op_name(node) == "getitem" and op_name(node.args[0]) in SPLITS:
            split = node.args[0]
            node = split.args[0]
        elif op_name(node) in PASS_THROUGH:
            node = node.args[0]
        else:
            return None
    if node is None:
        return None
    linear = _linear(gm, node)
    return None if linear is None else Source(node, linear, split)


def _output_projection(gm, node) -> nn.Linear | None:
    """The first Linear the attention's output reaches through reshapes."""
    while True:
        users = list(node.users)
        if len(users) != 1:
            return None
        node = users[0]
        if linear := _linear(gm, node):
            return linear
        if node.op != "call_function" or op_name(node) not in PASS_THROUGH:
            return None


def _attention_inputs(node) -> tuple | None:
    """(query, key, value, the node whose output is the attention's context) or None."""
    op = op_name(node) if node.op == "call_function" else ""
    if op == "scaled_dot_product_attention":
        return (*node.args[:3], node)
    if op not in ("softmax", "_softmax"):
        return None
    scores = node.args[0]
    while scores.op == "call_function" and op_name(scores) in ("add", "mul", "div", "masked_fill"):
        scores = scores.args[0]
    users = list(node.users)
    while len(users) == 1 and op_name(users[0]) in ("dropout", "_to_copy", "to"):
        users = list(users[0].users)
    if op_name(scores) not in ("matmul", "bmm") or len(users) != 1:
        return None
    context = users[0]
    if op_name(context) not in ("matmul", "bmm") or context.args[0] is not users[0].args[0]:
        return None
    query, key = scores.args[:2]
    return query, key, context.args[1], context


def attention_sites(gm: torch.fx.GraphModule) -> int:
    """How many attention computations the program has, traceable or not."""
    return sum(_attention_inputs(node) is not None for node in gm.graph.nodes)


def find_program_attention(gm: torch.fx.GraphModule) -> list[Attention]:
    """Every attention in a relifted program whose projections are whole heads of one size."""
    from compress.torch.head_pruning import Attention

    found = []
    for node in gm.graph.nodes:
        inputs = _attention_inputs(node)
        if inputs is None:
            continue
        query, key, value, context = inputs
        value_meta = value.meta.get("val")
        if value_meta is None or value_meta.dim() != 4:
            continue
        head_size = int(value_meta.shape[-1])
        sources = [s for n in (query, key, value) if (s := _source(gm, n)) is not None]
        if len(sources) != 3:
            continue
        calls, splits = [s.call for s in sources], {s.split for s in sources}
        name = str(calls[0].target).rpartition(".")[0]  # the attention's own module path
        if len(set(calls)) == 3 and splits == {None}:  # separate query, key, value
            projections = tuple(s.linear for s in sources)
            found.append(Attention(name, None, None, head_size, projections))
        elif len(set(calls)) == 1 and len(splits) == 1 and None not in splits:  # [q | k | v]
            output = _output_projection(gm, context)
            if output is not None:
                fused = (sources[0].linear,)
                found.append(Attention(name, None, None, head_size, fused, output))
    return found
