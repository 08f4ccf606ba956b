"""Multiply-accumulates per sample of an ONNX model, read off the graph itself.

Counted: convolutions and matrix products (Conv, ConvInteger, QLinearConv, MatMul, MatMulInteger,
QLinearMatMul, Gemm, MatMulNBits), which carry nearly all the arithmetic of the models this tool
compresses. Shapes are read off one real sample run in ONNX Runtime (ONNX shape inference loses
track of them in exported transformers), so a quantized graph counts the same work as its float
input, and a pruned one counts less.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

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
    counted, shapes, wanted = _counted(model.graph)
    _with_outputs(model.graph, wanted)
    outputs, rows = run_for_outputs(model, sample)
    return _by_type(counted, shapes, outputs, rows)


def macs_at(path: Path, sample: list[np.ndarray]) -> int:
    """count_macs of the ONNX file at `path`, its weights read by ONNX Runtime alone (see
    `run_file_for_outputs`): never a second copy of them in this process."""
    found: dict = {}

    def wanted(graph) -> set[str]:
        counted, shapes, names = _counted(graph)
        found.update(counted=[_copied(node) for node in counted], shapes=shapes)
        return names

    outputs, rows = run_file_for_outputs(Path(path), wanted, sample)
    return sum(_by_type(found["counted"], found["shapes"], outputs, rows).values())


def _copied(node):
    """A NodeProto apart from its model (a reference would keep the whole model alive)."""
    import onnx

    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy


def _counted(graph) -> tuple[list, dict[str, tuple[int, ...]], set[str]]:
    """The counted nodes, the initializers' shapes, and the tensors whose shapes must be run."""
    counted = [node for node in graph.node if _is_counted(node)]
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    wanted = {name for node in counted for name in (*node.input, node.output[0])} - set(shapes)
    return counted, shapes, wanted


def _with_outputs(graph, names: Iterable[str]) -> None:
    """`graph` with each of `names` that is not an output yet made one."""
    import onnx

    known = {output.name for output in graph.output}
    graph.output.extend(onnx.ValueInfoProto(name=n) for n in sorted(set(names) - known) if n)


def _by_type(counted, shapes, outputs: dict[str, np.ndarray], rows: int) -> dict[str, int]:
    shapes = shapes | {name: a.shape for name, a in outputs.items()}
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


def run_file_for_outputs(
    path: Path, outputs_of: Callable[[object], Iterable[str]], sample: list[np.ndarray]
) -> tuple[dict[str, np.ndarray], int]:
    """run_for_outputs of the model at `path` with `outputs_of(graph)` made outputs too. The
    model is read without its external data and written beside `path` (so the copy finds the
    same data file); ONNX Runtime opens that file after this process has let the model go, so
    a model's weights are held once, by the session, not also as a ModelProto and its bytes."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(path), load_external_data=False)
    _with_outputs(proto.graph, outputs_of(proto.graph))
    widened = path.with_name(f".outputs.{path.name}")
    try:
        widened.write_bytes(proto.SerializeToString())
        del proto
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.enable_cpu_mem_arena = False  # every tensor comes out: the arena would double it
        options.add_session_config_entry("session.disable_prepacking", "1")  # nor the weights
        session = ort.InferenceSession(str(widened), options, providers=["CPUExecutionProvider"])
    finally:
        widened.unlink(missing_ok=True)
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
