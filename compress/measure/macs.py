"""Multiply-accumulates per sample of an ONNX model, read off the graph itself.

Counted: convolutions and matrix products (Conv, ConvInteger, QLinearConv, MatMul, MatMulInteger,
QLinearMatMul, Gemm, MatMulNBits), which carry nearly all the arithmetic of the models this tool
compresses. Shapes are read off one real sample run in ONNX Runtime (ONNX shape inference loses
track of them in exported transformers), so a quantized graph counts the same work as its float
input, and a pruned one counts less.
"""

from __future__ import annotations

import math

import numpy as np

from compress.measure.fixed_batch import padded
from compress.measure.runtime import feeds, fixed_batch

# op type -> index of the input whose last dim is the reduction
_MATMULS = {"MatMul": 0, "MatMulInteger": 0, "QLinearMatMul": 0}
_CONVS = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}  # op type -> index of the weight
_OTHERS = ("Gemm", "MatMulNBits")


def count_macs(proto, sample: list[np.ndarray]) -> int:
    """MACs of the loaded ONNX model `proto` for one sample: `sample` holds its inputs with a
    batch of 1. `proto` is left as it was."""
    return sum(macs_by_op_type(proto, sample).values())


def macs_by_op_type(proto, sample: list[np.ndarray]) -> dict[str, int]:
    """count_macs, per op type of the counted nodes (Conv, MatMul, Gemm, ...)."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)  # the copy gets extra graph outputs to read shapes from
    graph = model.graph
    counted = [node for node in graph.node if _is_counted(node)]
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    wanted = {name for node in counted for name in (*node.input, node.output[0])} - set(shapes)
    known_outputs = {output.name for output in graph.output}
    graph.output.extend(
        onnx.ValueInfoProto(name=name) for name in sorted(wanted - known_outputs) if name
    )
    outputs, rows = run_for_outputs(model, sample)
    shapes.update({name: a.shape for name, a in outputs.items()})
    by_type: dict[str, int] = {}
    for node in counted:
        by_type[node.op_type] = by_type.get(node.op_type, 0) + _node_macs(node, shapes)
    return {op: macs // rows for op, macs in by_type.items()}


def run_for_outputs(model, sample: list[np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """Every graph output of `model` (a ModelProto) on `sample`, unoptimized, in ONNX Runtime,
    and the batch they were computed for: `sample`'s, or the model's fixed batch (`sample`
    padded up to it), whose work is that many times one sample's."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    names = [output.name for output in session.get_outputs()]
    rows = fixed_batch(session) or len(sample[0])
    values = session.run(names, feeds(session, padded(sample, rows)))
    return dict(zip(names, values, strict=True)), rows


def _is_counted(node) -> bool:
    return node.op_type in _MATMULS or node.op_type in _CONVS or node.op_type in _OTHERS


def _node_macs(node, shapes: dict[str, tuple[int, ...]]) -> int:
    """Output elements times the length of the reduction (kernel volume x input channels, or K)."""
    op, output = node.op_type, shapes[node.output[0]]
    if op in _CONVS:
        reduction = math.prod(shapes[node.input[_CONVS[op]]][1:])
    elif op == "MatMulNBits":
        reduction = next(a.i for a in node.attribute if a.name == "K")
    elif op == "Gemm":
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        left = shapes[node.input[0]]
        reduction = left[0] if trans_a else left[-1]
    else:
        reduction = shapes[node.input[_MATMULS[op]]][-1]
    return math.prod(output) * reduction
