"""One graph that runs the float model and, beside it, a copy of the quantized model whose every
node reads the float model's values: each quantized node's output then carries its own
quantization error and none inherited from the nodes before it.

Measured in the quantized model as it runs, a node after a ruined one (an attention Softmax
whose scores lost their precision) looks as bad as the ruined one, and subtracting what it
inherits does not undo that once the noise is as large as the signal. Fed float inputs, the
nodes after it show what they would cost alone, so the ranking puts the culprit first and the
estimate of how much error each prefix of the ranking removes holds.

Wiring, for every tensor X both graphs compute: the copy's consumers of X read the float X, and
where a QuantizeLinear -> DequantizeLinear pair follows X (QDQ), the consumers of its dequantized
output read a second pair, with the same scale and zero point, on the float X: they see the
rounding of their input and nothing before it. The copy's own X (before its pair) is what its
producer is judged by (compress.quant.sensitivity.twins). Returns None where the two graphs cannot
share one model safely: different opsets, subgraphs (their bodies name outer tensors), local
functions.
"""

from __future__ import annotations

PREFIX = "quantized::"


def isolated_model(float_model, quant_model):
    """The combined model (ModelProto), or None; `float_model` is left as it was."""
    import onnx

    if not _combinable(float_model, quant_model):
        return None
    float_graph, quant_graph = float_model.graph, quant_model.graph
    initializers = {i.name for i in quant_graph.initializer}
    inputs = {i.name for i in quant_graph.input} - initializers
    computed = {o for n in float_graph.node for o in n.output if o}
    shared = computed & {o for n in quant_graph.node for o in n.output if o}

    def copy_name(tensor: str) -> str:
        return tensor if not tensor or tensor in inputs else PREFIX + tensor

    pairs = _quantize_pairs(quant_graph, shared)
    dequantized = {dequantize.output[0] for _, dequantize in pairs.values()}
    nodes = []
    for node in quant_graph.node:
        clone = onnx.NodeProto()
        clone.CopyFrom(node)
        clone.name = PREFIX + node.name
        pair = pairs.get(node.input[0]) if node.input else None
        keeps_own = pair is not None and node.name == pair[0].name  # X's own QuantizeLinear
        for index, tensor in enumerate(node.input):
            if tensor in shared and not keeps_own:
                clone.input[index] = tensor  # read the float model's value
            elif tensor in dequantized:
                clone.input[index] = tensor + "::float"  # the pair on the float value, below
            else:
                clone.input[index] = copy_name(tensor)
        for index, tensor in enumerate(node.output):
            clone.output[index] = copy_name(tensor)
        nodes.append(clone)
    # the second pairs read only float tensors: placed first, the node list stays in graph order
    # (shape inference, which exposes the tensors, reads it in that order)
    nodes = _float_side_pairs(pairs, copy_name) + nodes
    combined = onnx.ModelProto()
    combined.CopyFrom(float_model)
    combined.ir_version = max(float_model.ir_version, quant_model.ir_version)
    imported = {o.domain or "ai.onnx" for o in combined.opset_import}
    for opset in quant_model.opset_import:  # a domain only the quantizer uses (com.microsoft)
        if (opset.domain or "ai.onnx") not in imported:
            combined.opset_import.add().CopyFrom(opset)
    combined.graph.node.extend(nodes)
    for tensor in quant_graph.initializer:
        renamed = combined.graph.initializer.add()
        renamed.CopyFrom(tensor)
        renamed.name = copy_name(tensor.name)
    return combined


def _combinable(float_model, quant_model) -> bool:
    def opsets(model):
        return {(o.domain or "ai.onnx"): o.version for o in model.opset_import}

    # a domain both import must be at one version; one only the quantized model imports (the
    # com.microsoft of MatMulNBits) is added to the combined model
    float_ops, quant_ops = opsets(float_model), opsets(quant_model)
    if any(float_ops.get(d, v) != v for d, v in quant_ops.items()):
        return False
    if float_model.functions or quant_model.functions:
        return False
    return not any(
        a.type in (a.GRAPH, a.GRAPHS)
        for graph in (float_model.graph, quant_model.graph)
        for n in graph.node
        for a in n.attribute
    )


def _quantize_pairs(quant_graph, shared: set[str]) -> dict[str, tuple]:
    """Shared tensor -> (its QuantizeLinear, the DequantizeLinear after it)."""
    consumers: dict[str, list] = {}
    for node in quant_graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    pairs = {}
    for node in quant_graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in shared:
            continue
        after = [c for c in consumers.get(node.output[0], []) if c.op_type == "DequantizeLinear"]
        if after and node.input[0] not in pairs:
            pairs[node.input[0]] = (node, after[0])
    return pairs


def _float_side_pairs(pairs: dict[str, tuple], copy_name) -> list:
    """For each pair, a second one with its scale and zero point, on the float tensor."""
    nodes = []
    for tensor, (quantize, dequantize) in pairs.items():
        quantized = dequantize.output[0] + "::float-q"
        nodes.append(_float_copy(quantize, tensor, quantized, copy_name))
        nodes.append(
            _float_copy(dequantize, quantized, dequantize.output[0] + "::float", copy_name)
        )
    return nodes


def _float_copy(node, reads: str, writes: str, copy_name):
    """`node` on the float side: reading `reads`, writing `writes`, its other inputs renamed."""
    import onnx

    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.name = PREFIX + node.name + "::float"
    copy.input[0] = reads
    for i in range(1, len(copy.input)):
        copy.input[i] = copy_name(copy.input[i])
    copy.output[0] = writes
    return copy
