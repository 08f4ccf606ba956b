"""Sibling MatMulNBits packed into one: the MatMuls that read the same input (a layer's query,
key and value projections; an MLP's gate and up) become one MatMulNBits over their weights
side by side, and a Split gives each its own output again.

A decode step runs each MatMul on one row, so a node's fixed cost (dispatch, the int8
quantization of its input at accuracy_level 4, a pass over the thread pool) is paid per node;
ONNX Runtime GenAI's model builder writes packed projections for that reason. The weights are
only laid side by side: MatMulNBits keeps B as [N, blocks, bytes], its scales and zero points
column by column, so each column's codes, scales and zero points are the ones it had alone.

Nodes are packed only where nothing else reads their weights (a tied head's table is read by
its lookups) and they agree on everything but N: K, bits, block size, accuracy_level, the
presence of zero points and of a bias, no group index.

Where a decoder's GroupQueryAttention rotates its queries and keys itself (compress.torch.
gqa_fusion), a packed query/key/value goes into it as its packed QKV input, without the Split.

Before packing, a bias added to a MatMulNBits' output (`Add(MatMulNBits(x), b)`, Qwen2's query,
key and value biases, GPT-2's) goes into the node's own bias input, as the builder writes it:
one node less per bias, and a packed group then adds its biases side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.quant.module_names import module_of
from compress.records import Record

if TYPE_CHECKING:  # onnx is imported where a model is packed: not by the report's records
    from compress.quant.graph_edit import Graph

PACKED_ATTRIBUTES = ("K", "bits", "block_size", "accuracy_level")
SPLIT_SIZES_AS_INPUT = 13  # the opset from which Split reads its sizes as an input
MICROSOFT = "com.microsoft"
WEIGHT_SLOTS = (1, 2, 3)  # MatMulNBits' B, scales and zero points
GROUP_INDEX, BIAS = 4, 5  # its other optional inputs


class PackedGroup(Record):
    """One MatMulNBits made of several: the MatMuls it replaced, in order, each named by the
    torch module it came from where the export recorded it (else its node), and their columns."""

    matmuls: list[str]
    columns: list[int]


@dataclass(frozen=True)
class _Member:
    node: Any  # onnx.NodeProto
    index: int  # its place in the graph
    columns: int


def pack(path: Path) -> list[PackedGroup]:
    """Fold the biases and pack the sibling MatMulNBits of the model at `path`, rewritten in
    place where either changed it."""
    import onnx

    from compress.models.onnx_files import save_onnx

    model = onnx.load(str(path))
    nodes = len(model.graph.node)
    packed = pack_siblings(model)
    if packed or len(model.graph.node) != nodes:  # packed, or biases folded
        save_onnx(model, path)
    return packed


def packed_summary(groups: list[PackedGroup]) -> str:
    """One line: how many MatMuls were packed into how many."""
    sizes = sorted({len(group.matmuls) for group in groups})
    return (
        f"{sum(len(g.matmuls) for g in groups)} MatMuls that read the same input packed into "
        f"{len(groups)} MatMulNBits ({' or '.join(map(str, sizes))} each)"
    )


def pack_siblings(model) -> list[PackedGroup]:
    """Fold the biases added to MatMulNBits' outputs into them, then pack `model`'s sibling
    MatMulNBits (in place); returns what was packed."""
    from compress.quant.graph_edit import Graph

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    _fold_biases(Graph(model))
    indexed = Graph(model)
    groups = _sibling_groups(indexed) if opset >= SPLIT_SIZES_AS_INPUT else {}
    if not groups:
        return []
    packed_at: dict[int, list] = {}
    dropped: set[int] = set()
    replaced: set[str] = set()
    written = []
    for members in groups.values():
        packed_at[members[0].index] = _packed_nodes(members, indexed)
        dropped.update(m.index for m in members)
        replaced.update(name for m in members for name in m.node.input[1:])
        names = [module_of(m.node) or m.node.name for m in members]
        written.append(PackedGroup(matmuls=names, columns=[m.columns for m in members]))
    graph = model.graph
    kept = []
    for index, node in enumerate(graph.node):
        kept.extend(packed_at.get(index, []))
        if index not in dropped:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    _attention_reads_packed(Graph(model))
    replaced.update(n.input[1] for nodes in packed_at.values() for n in nodes[1:])  # sizes
    read = {name for node in graph.node for name in node.input}  # a shared bias may be read
    kept_initializers = [i for i in graph.initializer if i.name not in replaced - read]
    del graph.initializer[:]
    graph.initializer.extend(kept_initializers)
    return written


def _attention_reads_packed(graph: Graph) -> None:
    """Each packed query/key/value Split that only feeds one GroupQueryAttention's query, key
    and value, in that order, goes: the attention reads the packed projection as its packed QKV
    input (in place). Only where it rotates them itself (do_rotary): otherwise the rotary
    embeddings sit between the two."""
    from compress.quant.graph_edit import attribute

    gone = set()
    for split in graph.graph.node:
        if split.op_type != "Split" or len(split.output) != 3:
            continue
        if attribute(split, "axis", 0) not in (-1, 2):
            continue  # not across [batch, sequence, features]' last axis
        attention = graph.only_reader(split.output[0])  # None for a graph output
        if attention is None or any(graph.only_reader(o) is not attention for o in split.output):
            continue
        if attention.op_type != "GroupQueryAttention" or attention.domain != MICROSOFT:
            continue
        if list(attention.input[:3]) != list(split.output) or not attribute(attention, "do_rotary"):
            continue
        attention.input[0], attention.input[1], attention.input[2] = split.input[0], "", ""
        gone.add(split.output[0])
    _drop(graph, "Split", gone)


def _drop(graph: Graph, op_type: str, outputs: set[str]) -> None:
    """Remove the `op_type` nodes whose first output is one of `outputs` (in place)."""
    if outputs:
        nodes = graph.graph.node
        kept = [n for n in nodes if not (n.op_type == op_type and n.output[0] in outputs)]
        del nodes[:]
        nodes.extend(kept)


def _fold_biases(graph: Graph) -> None:
    """Each `Add(MatMulNBits(...), b)` with a constant b of the node's N columns, the Add its
    output's only reader, becomes the MatMulNBits with bias b (in place)."""
    from compress.quant.graph_edit import attribute

    folded: set[str] = set()
    for node in graph.graph.node:
        if node.op_type != "MatMulNBits" or node.domain != MICROSOFT or len(node.input) > 4:
            continue
        add = graph.only_reader(node.output[0])
        if add is None or add.op_type != "Add" or len(set(add.input)) != 2:
            continue
        bias_name = next(name for name in add.input if name != node.output[0])
        bias, scales = graph.array(bias_name), graph.array(node.input[2])
        columns = attribute(node, "N")
        if bias is None or scales is None or bias.shape != (columns,):
            continue
        if bias.dtype != scales.dtype:
            continue  # the bias is of the input's type, as the scales are
        inputs = [*node.input, *[""] * (BIAS - len(node.input)), bias_name]
        del node.input[:]
        node.input.extend(inputs)
        node.output[0] = add.output[0]
        folded.add(add.output[0])  # now the MatMulNBits' output too
    _drop(graph, "Add", folded)


def _sibling_groups(graph: Graph) -> dict[tuple, list[_Member]]:
    """MatMulNBits that can be packed, by (input, zero points, bias, K, bits, block, level)."""
    from compress.quant.graph_edit import attribute

    groups: dict[tuple, list[_Member]] = {}
    for index, node in enumerate(graph.graph.node):
        if node.op_type != "MatMulNBits" or node.domain != MICROSOFT:
            continue
        inputs = [*node.input, *[""] * (BIAS + 1 - len(node.input))]
        if len(node.input) > BIAS + 1 or inputs[GROUP_INDEX]:
            continue  # a group index
        weights = [inputs[slot] for slot in WEIGHT_SLOTS if inputs[slot]]
        constants = [*weights, *[inputs[BIAS]] * bool(inputs[BIAS])]
        if len(weights) < 2 or not all(w in graph.initializers for w in constants):
            continue  # a weight computed at run time
        if any(len(graph.readers[w]) != 1 for w in weights):
            continue  # a tied head: its lookups read the same blocks
        if {a.name for a in node.attribute} - {*PACKED_ATTRIBUTES, "N"}:
            continue
        key = (
            node.input[0],
            bool(inputs[3]),
            bool(inputs[BIAS]),
            *(attribute(node, a, 0 if a == "accuracy_level" else None) for a in PACKED_ATTRIBUTES),
        )
        groups.setdefault(key, []).append(_Member(node, index, int(attribute(node, "N"))))
    return {key: members for key, members in groups.items() if len(members) > 1}


def _packed_nodes(members: list[_Member], graph: Graph) -> list:
    """The packed MatMulNBits and its Split; their initializers are added to `graph`."""
    import numpy as np
    from onnx import helper

    first = members[0].node
    name = f"{first.name}_packed"
    inputs = [first.input[0]]
    for slot, suffix in ((1, "B"), (2, "scales"), (3, "zero_points"), (4, ""), (5, "bias")):
        if slot < len(first.input) and first.input[slot]:
            stacked = np.concatenate([graph.constant(m.node.input[slot]) for m in members])
            inputs.append(graph.add_initializer(f"{name}_{suffix}", stacked))
        else:
            inputs.append("")
    while not inputs[-1]:
        inputs.pop()
    columns = [m.columns for m in members]
    matmul = helper.make_node(
        "MatMulNBits", inputs, [f"{name}_output"], name, domain="com.microsoft", N=sum(columns)
    )
    matmul.attribute.extend(a for a in first.attribute if a.name != "N")
    sizes = graph.add_initializer(f"{name}_split_sizes", np.array(columns, dtype=np.int64))
    outputs = [m.node.output[0] for m in members]
    split = helper.make_node("Split", [matmul.output[0], sizes], outputs, f"{name}_split", axis=-1)
    return [matmul, split]
