"""Graph rewrites that weight-only quantization needs: Gemm with a constant weight as MatMul
(+ Add for the bias), so models whose linear layers export as Gemm (GPT-2's Conv1D, a
classifier head) shrink too; and embedding tables (Gather from a constant) stored as int8."""

from __future__ import annotations

import numpy as np


def gemms_as_matmul(model) -> list[str]:
    """Rewrite each Gemm whose weight B is a float constant as MatMul with the weight stored
    [in, out] (transposed if transB, alpha folded in), plus an Add of beta * C when it has a
    bias; the MatMul keeps the Gemm's name so `exclude` still finds it. Returns those names."""
    import onnx
    from onnx import helper, numpy_helper

    from compress.quant.graph_edit import Graph, attribute

    graph = Graph(model)
    new_nodes, rewritten = [], []
    for node in model.graph.node:
        weight = graph.initializers.get(node.input[1]) if node.op_type == "Gemm" else None
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        beta = attribute(node, "beta", 1.0)
        if (
            weight is None
            or weight.data_type != onnx.TensorProto.FLOAT
            or attribute(node, "transA", 0)
            or (bias is not None and beta != 1.0 and bias not in graph.initializers)
        ):
            new_nodes.append(node)
            continue
        matrix = numpy_helper.to_array(weight) * attribute(node, "alpha", 1.0)
        if attribute(node, "transB", 0):
            matrix = matrix.T
        stored = graph.add_initializer(f"{weight.name}_matmul", np.ascontiguousarray(matrix))
        product = f"{node.output[0]}_matmul" if bias else node.output[0]
        matmul = helper.make_node("MatMul", [node.input[0], stored], [product], node.name)
        matmul.metadata_props.extend(node.metadata_props)  # the torch module it came from
        new_nodes.append(matmul)
        if bias:
            if beta != 1.0:
                scaled = numpy_helper.to_array(graph.initializers[bias]) * beta
                bias = graph.add_initializer(f"{bias}_beta", scaled.astype(np.float32))
            add = helper.make_node("Add", [product, bias], node.output, f"{node.name}_bias")
            add.metadata_props.extend(node.metadata_props)
            new_nodes.append(add)
        rewritten.append(node.name)
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
        drop_unused_initializers(model)
    return rewritten


def transposed_weights_as_initializers(model, skip: frozenset[str] = frozenset()) -> list[str]:
    """Give each MatMul that reads a float constant through a Transpose the transposed weight
    as its own initializer, so the 4-bit quantizer, which only takes a constant weight,
    quantizes it (it stayed float32: a 6.3 MB head in a 4.7 MB int4 model). A head tied to an
    embedding lookup (in `skip`) is quantized without the copy (compress.quant.tied_head); what
    is left here is a head in `exclude` or a constant no lookup reads. Returns the MatMuls'
    names."""
    import onnx
    from onnx import numpy_helper

    from compress.quant.graph_edit import Graph, attribute

    graph = Graph(model)
    transposed: dict[str, str] = {}  # a Transpose's output -> the initializer made for it
    rewritten = []
    for node in model.graph.node:
        if node.op_type != "MatMul" or len(node.input) < 2 or node.name in skip:
            continue
        source = graph.producer.get(node.input[1])
        table = graph.initializers.get(source.input[0]) if source is not None else None
        if (
            source is None
            or source.op_type != "Transpose"
            or table is None
            or table.data_type != onnx.TensorProto.FLOAT
            or len(table.dims) != 2
            or list(attribute(source, "perm", [1, 0])) != [1, 0]
        ):
            continue
        if node.input[1] not in transposed:
            matrix = np.ascontiguousarray(numpy_helper.to_array(table).T)
            transposed[node.input[1]] = graph.add_initializer(f"{table.name}_transposed", matrix)
        node.input[1] = transposed[node.input[1]]
        rewritten.append(node.name)
    if rewritten:
        read = {name for n in model.graph.node for name in n.input}
        read |= {o.name for o in model.graph.output}
        kept = [n for n in model.graph.node if n.op_type != "Transpose" or n.output[0] in read]
        del model.graph.node[:]
        model.graph.node.extend(kept)
        drop_unused_initializers(model)
    return rewritten


def drop_unused_initializers(model) -> None:
    """Drop the initializers no node and no graph output reads."""
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def quantize_embeddings(model) -> list[str]:
    """Store each Gather's constant float table [rows, dim] as int8 (symmetric, one scale per
    column) and dequantize the gathered rows; returns the tables' names."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = {i.name: i for i in graph.initializer}
    tables, new_nodes = [], []
    for node in graph.node:
        table = constants.get(node.input[0]) if node.op_type == "Gather" else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if table is None or axis != 0 or table.data_type != onnx.TensorProto.FLOAT:
            new_nodes.append(node)
            continue
        weights = numpy_helper.to_array(table)
        if weights.ndim != 2:
            new_nodes.append(node)
            continue
        scale = (np.abs(weights).max(axis=0) / 127.0).astype(np.float32)
        scale[scale == 0] = 1.0
        quantized = np.clip(np.round(weights / scale), -127, 127).astype(np.int8)
        stem = table.name
        graph.initializer.extend(
            [
                numpy_helper.from_array(quantized, f"{stem}_int8"),
                numpy_helper.from_array(scale, f"{stem}_scale"),
                numpy_helper.from_array(np.zeros_like(quantized[0]), f"{stem}_zero_point"),
            ]
        )
        gathered = f"{node.output[0]}_int8"
        new_nodes.append(
            helper.make_node("Gather", [f"{stem}_int8", node.input[1]], [gathered], node.name)
        )
        new_nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [gathered, f"{stem}_scale", f"{stem}_zero_point"],
                [node.output[0]],
                f"{node.name}_dequantize",
                axis=-1,
            )
        )
        tables.append(stem)
    still_used = {i for n in new_nodes for i in n.input}
    kept = [i for i in graph.initializer if i.name not in tables or i.name in still_used]
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return tables
