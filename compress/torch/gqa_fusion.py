"""A decoder's attention over its cache as ONNX Runtime's GroupQueryAttention, the operator ONNX
Runtime GenAI's model builder writes: one node per layer that appends the step's keys and values
to the cache, attends with the model's key/value heads as they are (no repeated copies of the
cache per query head) and writes the present cache, where the export otherwise leaves a
MultiHeadAttention and a dozen small nodes around it (two Concats, the Reshape/Expand that repeat
the cache per head, Transposes).

onnxscript's own GroupQueryAttention rule is not used: it reads each row's length off the
position ids and drops the attention mask, which gives other logits where a row is padded. Here
the mask's additive bias, the one the MultiHeadAttention read, goes to GroupQueryAttention's
`attention_bias`, and every row is told the whole length (`seqlens_k` = total - 1): a query at
step position s then sees keys up to past + s, as causality wants, and the bias hides the padding
on either side. The rotary embeddings move into the operator (`do_rotary`, fed the same cos/sin
tables and the graph's `position_ids`, which it reads token by token: a left-padded row's
positions are right) where the queries and keys are rotated by one table over whole heads of a
size the kernel takes (a multiple of 16); elsewhere they stay RotaryEmbedding nodes before it.
With the rotation inside, the query, key and value projections can feed the operator as one
packed input (compress.quant.nbits_pack, after quantize.int4 packs them), as the builder's do.

The rewrite takes a layer only where its MultiHeadAttention reads, through nothing but reshapes
of the cache, the `present.N.key/value` Concats of `past_key_values.N.key/value` and the step's
keys and values; any other layer keeps its MultiHeadAttention.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

GQA = "GroupQueryAttention"
MICROSOFT = "com.microsoft"
RESHAPES = ("Reshape", "Expand", "Unsqueeze", "Transpose")  # how the cache reaches the MHA
TO_HEADS = (0, 2, 1, 3)  # [batch, sequence, heads, dim] <-> [batch, heads, sequence, dim]
MHA_ATTRIBUTES = {"num_heads", "scale"}  # what GroupQueryAttention means the same by
ROTARY_HEAD_MULTIPLE = 16  # the head sizes its kernel rotates ("a multiple of 16")
# the inputs read by position beyond the cache's: ONNX Runtime 1.32 declares them so
MASKED_INPUTS = {"attention_bias": 10, "query_seqlens": 16}


@functools.cache
def runtime_masks_gqa() -> bool:
    """Whether the installed ONNX Runtime's GroupQueryAttention takes an attention bias and
    per-row query lengths where this rewrite passes them (older ones take neither: their
    graphs keep MultiHeadAttention)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort

    for schema in ort.get_all_operator_schema():
        if schema.name == GQA and schema.domain == MICROSOFT:
            names = [formal.name for formal in schema.inputs]
            return all(
                len(names) > index and names[index] == name for name, index in MASKED_INPUTS.items()
            )
    return False


class CacheSide(NamedTuple):
    """One side (keys or values) of a layer's cache: what the step adds and where it goes."""

    past: Any  # graph input past_key_values.N.key/value [batch, kv_heads, past, dim]
    present: Any  # graph output present.N.key/value, a Concat's today
    step: Any  # the step's keys or values: [batch, sequence, kv_heads x dim], or heads_first
    rotary: Any  # ONNX Runtime's RotaryEmbedding the step went through on its way, or None
    kv_heads: int
    heads_first: bool  # step is [batch, kv_heads, sequence, dim] as the Concat reads it


def fuse_group_query_attention(model: Any) -> int:
    """Rewrite, in the onnx_ir model in place, each layer's MultiHeadAttention over the cache
    into one GroupQueryAttention (see the module's docstring); how many were rewritten."""
    import onnx_ir as ir
    from onnx_ir.passes.common import RemoveUnusedNodesPass

    graph = model.graph
    inputs = {v.name: v for v in graph.inputs}
    ids, mask = inputs.get("input_ids"), inputs.get("attention_mask")
    if ids is None or mask is None or not runtime_masks_gqa():
        return 0
    lengths = None
    fused = 0
    for node in list(graph):
        layer = _cache_attention(node)
        if layer is None:
            continue
        keys, values = layer
        if lengths is None:
            lengths = _lengths(graph, ids, mask, node)
        added: list[Any] = []
        attributes = [a for name, a in node.attributes.items() if name in MHA_ATTRIBUTES]
        attributes.append(ir.AttrInt64("kv_num_heads", keys.kv_heads))
        inside = _rotation_inside(node.inputs[0], keys)
        if inside is not None:
            query, step_keys, rotation = inside.query, keys.step, inside.inputs
            attributes += [
                ir.AttrInt64("do_rotary", 1),
                ir.AttrInt64("rotary_interleaved", inside.interleaved),
            ]
        else:
            query, step_keys, rotation = node.inputs[0], _flat_step(keys, added), [None] * 3
        attention = ir.Node(
            MICROSOFT, GQA,
            [query, step_keys, _flat_step(values, added), keys.past, values.past, *lengths[:2],
             *rotation, node.inputs[5], *[None] * 5, lengths[2]],
            attributes=attributes, num_outputs=3, name=f"{node.name}_gqa",
        )  # fmt: skip
        added.append(attention)
        graph.insert_before(node, added)
        output, present_key, present_value = attention.outputs
        node.outputs[0].replace_all_uses_with(output)
        output.name, output.shape, output.type = _renamed(node.outputs[0])
        for side, made in ((keys, present_key), (values, present_value)):
            index = list(graph.outputs).index(side.present)
            made.name, made.shape, made.type = _renamed(side.present)
            graph.outputs[index] = made
        graph.remove(node, safe=True)
        fused += 1
    if fused:
        RemoveUnusedNodesPass()(model)
        model.opset_imports.setdefault(MICROSOFT, 1)
    return fused


class Rotation(NamedTuple):
    """Rotary embeddings GroupQueryAttention applies itself: the unrotated queries, and the
    operator's cos_cache, sin_cache and position_ids."""

    query: Any
    inputs: list[Any]
    interleaved: int


def _rotation_inside(query: Any, keys: CacheSide) -> Rotation | None:
    """The rotation of `query` and of the step's keys, where GroupQueryAttention can apply it:
    both by ONNX Runtime's RotaryEmbedding, from the same positions and tables, over whole
    heads (no rotary_embedding_dim, no scale) of a size its kernel takes; else None."""
    rotary = query.producer()
    if rotary is None or keys.rotary is None:
        return None
    if (rotary.op_type, rotary.domain) != ("RotaryEmbedding", MICROSOFT):
        return None
    if list(rotary.inputs[1:4]) != list(keys.rotary.inputs[1:4]) or None in rotary.inputs[1:4]:
        return None  # other positions or tables
    settings = [  # interleaved unset is 0
        {"interleaved": 0} | {n: a.value for n, a in node.attributes.items() if n != "num_heads"}
        for node in (rotary, keys.rotary)
    ]
    if settings[0] != settings[1] or set(settings[0]) - {"interleaved"}:
        return None  # partial rotation, a scale, or the two rotated differently
    head_size = keys.past.shape[3]
    if not isinstance(head_size, int) or head_size % ROTARY_HEAD_MULTIPLE:
        return None
    unrotated = rotary.inputs[0]
    if unrotated.shape is None or len(unrotated.shape) != 3:
        return None
    return Rotation(
        unrotated, list(rotary.inputs[2:4]) + [rotary.inputs[1]], settings[0].get("interleaved", 0)
    )


def _renamed(value: Any) -> tuple[str, Any, Any]:
    """The name, shape and type of `value`, which gives its name up to its replacement."""
    name = value.name
    value.name = f"{name}_replaced"
    return name, value.shape, value.type


def _flat_step(side: CacheSide, added: list[Any]) -> Any:
    """The step's keys or values as GroupQueryAttention reads them, [batch, sequence, kv_heads x
    dim]: rotated there by the same RotaryEmbedding where one rotated them, or transposed and
    reshaped back from heads first; the nodes this takes are appended to `added`."""
    import numpy as np
    import onnx_ir as ir

    step = side.step
    if side.rotary is not None:
        attributes = dict(side.rotary.attributes)
        attributes["num_heads"] = ir.AttrInt64("num_heads", side.kv_heads)
        rotary = ir.Node(
            MICROSOFT, "RotaryEmbedding", [step, *side.rotary.inputs[1:]],
            attributes=list(attributes.values()), name=f"{side.rotary.name}_3d",
        )  # fmt: skip
        added.append(rotary)
        return rotary.outputs[0]
    if not side.heads_first:
        return step
    shape = ir.Node(
        "", "Constant", [], [ir.AttrTensor("value", ir.tensor(np.array([0, 0, -1])))],
        name=f"{side.present.name}_flat_shape",
    )  # fmt: skip
    transpose = ir.Node("", "Transpose", [step], [ir.AttrInt64s("perm", TO_HEADS)])
    flat = ir.Node("", "Reshape", [transpose.outputs[0], shape.outputs[0]])
    added += [shape, transpose, flat]
    return flat.outputs[0]


def _lengths(graph: Any, ids: Any, mask: Any, before: Any) -> list[Any]:
    """GroupQueryAttention's `seqlens_k` (every row: total - 1), `total_sequence_length` (the
    mask's length) and `query_seqlens` (every row: the step's length, the ids'), as int32; the
    nodes go in before `before`."""
    import numpy as np
    import onnx_ir as ir

    def constant(name: str, array: np.ndarray) -> Any:
        return ir.Node("", "Constant", [], [ir.AttrTensor("value", ir.tensor(array))], name=name)

    one, axis = constant("gqa_one", np.array(1, np.int32)), constant("gqa_axis", np.array([0]))
    total_1d = ir.Node("", "Shape", [mask], [ir.AttrInt64("start", 1)], name="gqa_total_1d")
    batch = ir.Node("", "Shape", [mask], [ir.AttrInt64("end", 1)], name="gqa_batch")
    squeezed = ir.Node("", "Squeeze", [total_1d.outputs[0], axis.outputs[0]], name="gqa_total_0d")
    total = ir.Node(
        "", "Cast", [squeezed.outputs[0]], [ir.AttrInt64("to", ir.DataType.INT32)],
        name="gqa_total",
    )  # fmt: skip
    last = ir.Node("", "Sub", [total.outputs[0], one.outputs[0]], name="gqa_last")
    rows = ir.Node("", "Expand", [last.outputs[0], batch.outputs[0]], name="gqa_seqlens_k")
    step = ir.Node(
        "", "Shape", [ids], [ir.AttrInt64("start", 1), ir.AttrInt64("end", 2)], name="gqa_step"
    )
    step_32 = ir.Node(
        "", "Cast", [step.outputs[0]], [ir.AttrInt64("to", ir.DataType.INT32)], name="gqa_step_32"
    )
    steps = ir.Node("", "Expand", [step_32.outputs[0], batch.outputs[0]], name="gqa_query_seqlens")
    made = [one, axis, total_1d, batch, squeezed, total, last, rows, step, step_32, steps]
    graph.insert_before(before, made)
    return [rows.outputs[0], total.outputs[0], steps.outputs[0]]


def _cache_attention(node: Any) -> tuple[CacheSide, CacheSide] | None:
    """The cache a MultiHeadAttention reads as its keys and values, or None where it is not one
    layer's self-attention over the cache in the form the export writes."""
    if node.op_type != "MultiHeadAttention" or node.domain != MICROSOFT:
        return None
    inputs = list(node.inputs) + [None] * (6 - len(node.inputs))
    if any(inputs[i] is not None for i in (3, 4, *range(6, len(inputs)))):
        return None  # a packed bias, a key padding mask, or past inputs of its own
    if set(node.attributes) - MHA_ATTRIBUTES or len(node.outputs) != 1:
        return None
    keys, values = _cache_side(inputs[1], "key"), _cache_side(inputs[2], "value")
    if keys is None or values is None or keys.kv_heads != values.kv_heads:
        return None
    if keys.past.name.split(".")[1] != values.past.name.split(".")[1]:
        return None  # keys and values of two different layers
    return keys, values


def _cache_side(value: Any, kind: str) -> CacheSide | None:
    """Follow the MultiHeadAttention's key or value input back, through reshapes only, to the
    present Concat of past and step; None where it leads elsewhere."""
    node = value.producer() if value is not None else None
    while node is not None and node.op_type in RESHAPES and node.domain == "":
        node = node.inputs[0].producer()
    if node is None or node.op_type != "Concat" or len(node.inputs) != 2:
        return None
    past, step = node.inputs
    present = node.outputs[0]
    if not (past.is_graph_input() and past.name.startswith("past_key_values.")):
        return None
    if not (present.is_graph_output() and present.name.endswith(f".{kind}")):
        return None
    if node.attributes.get("axis") is None or node.attributes["axis"].value not in (-2, 2):
        return None
    if past.shape is None or len(past.shape) != 4 or not isinstance(past.shape[1], int):
        return None
    kv_heads = int(past.shape[1])
    rotary = step.producer()
    if rotary is not None and (rotary.op_type, rotary.domain) == ("RotaryEmbedding", MICROSOFT):
        flat = _before_heads(rotary.inputs[0])
        if flat is not None:
            return CacheSide(past, present, flat, rotary, kv_heads, heads_first=False)
    flat = _before_heads(step)
    if flat is not None:
        return CacheSide(past, present, flat, None, kv_heads, heads_first=False)
    return CacheSide(past, present, step, None, kv_heads, heads_first=True)


def _before_heads(value: Any) -> Any:
    """The [batch, sequence, heads x dim] value that Transpose(Reshape(...)) split into heads,
    or None."""
    transpose = value.producer()
    if transpose is None or transpose.op_type != "Transpose":
        return None
    perm = transpose.attributes.get("perm")
    if perm is None or tuple(perm.value) != TO_HEADS:
        return None
    reshape = transpose.inputs[0].producer()
    if reshape is None or reshape.op_type != "Reshape":
        return None
    flat = reshape.inputs[0]
    if flat.shape is None or len(flat.shape) != 3:
        return None
    return flat
