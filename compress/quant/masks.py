"""Attention masks in int8: finite mask constants, and the masked scores kept in float.

Exported transformers mask attention scores with huge negative numbers: the TorchScript exporter
writes `Where(mask, 0, -inf)` for scaled_dot_product_attention, the dynamo exporter uses
float32's lowest value (-3.4e38), older models add -1e4. Calibrating such a tensor gives an int8
scale of infinity (NaN outputs) or one so coarse that every real score rounds to the same
value, and softmax over equal scores is uniform: the model's output collapses.

Two fixes, both automatic in the int8 passes:
- clamp: every constant <= MASK_VALUE (and -inf) becomes MASK_VALUE (-1e4). exp(-1e4) is 0 in
  float32, so softmax gives the same result for any score within +-1e4 of the row's largest;
- keep in float: the nodes that carry mask values from such a constant up to and including the
  Softmax that absorbs them (the mask Where/Add, the Softmax) are not quantized, so no scale is
  ever computed for a tensor holding -1e4. Everything before (the Q.K MatMul) and after (the
  attention-weighted V MatMul) stays int8.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from pydantic import ConfigDict, Field

from compress.quant.graph_edit import Graph
from compress.records import Record

MASK_VALUE = -1e4
# The taint stops here: a Softmax turns masked scores into zeros; these ops make no float value.
ABSORBS = {"Softmax"}
NO_FLOAT_OUTPUT = {
    "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor",
    "IsInf", "IsNaN", "Shape", "Size", "ArgMax", "ArgMin", "NonZero",
}  # fmt: skip
# Compute ops do not carry a mask through; if one reads a masked tensor, it is left alone.
COMPUTE = {"MatMul", "Gemm", "Conv", "ConvTranspose"}
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}


def _is_mask(array: np.ndarray) -> bool:
    return array.dtype.kind == "f" and array.size > 0 and bool((array <= MASK_VALUE).any())


def _clamped(array: np.ndarray) -> np.ndarray:
    return np.where(array < MASK_VALUE, np.asarray(MASK_VALUE, array.dtype), array)


class ClampedConstant(Record):
    """An attention-mask constant raised to MASK_VALUE: the tensor, its lowest value before."""

    model_config = ConfigDict(
        serialize_by_alias=True,
        validate_by_name=True,
        allow_inf_nan=True,
        ser_json_inf_nan="constants",
    )

    tensor: str
    lowest: float = Field(alias="from")
    to: float


def clamp_mask_constants(model: onnx.ModelProto) -> list[ClampedConstant]:
    """Clamp every constant <= MASK_VALUE (initializers, Constant and ConstantOfShape values) to
    MASK_VALUE, in place. Returns what was changed: the tensor and its most negative value."""
    changed = []

    def clamp(tensor: onnx.TensorProto, where: str) -> None:
        array = numpy_helper.to_array(tensor)
        if array.dtype.kind == "f" and array.size and bool((array < MASK_VALUE).any()):
            changed.append(ClampedConstant(tensor=where, lowest=float(array.min()), to=MASK_VALUE))
            tensor.CopyFrom(numpy_helper.from_array(_clamped(array), tensor.name))

    for initializer in model.graph.initializer:
        clamp(initializer, initializer.name)
    for node in model.graph.node:
        if node.op_type in ("Constant", "ConstantOfShape"):
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    clamp(attr.t, node.output[0])
    return changed


def mask_seeds(graph: Graph) -> set[str]:
    """Tensors holding a mask constant (<= MASK_VALUE)."""
    seeds = {name for name in graph.initializers if _is_mask(graph.constant(name))}
    for node in graph.graph.node:
        if node.op_type in ("Constant", "ConstantOfShape"):
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR and _is_mask(
                    numpy_helper.to_array(attr.t)
                ):
                    seeds.add(node.output[0])
    return seeds


def mask_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that carry mask values, from the constants to the Softmax that absorbs
    them (included), in graph order. Nodes without a name cannot be excluded and are skipped."""
    graph = Graph(model)
    tainted, found = mask_seeds(graph), []
    for node in graph.graph.node:  # ONNX nodes are topologically sorted
        if node.op_type in COMPUTE or not any(i in tainted for i in node.input):
            continue
        found.append(node)
        if node.op_type in ABSORBS or node.op_type in NO_FLOAT_OUTPUT:
            continue
        if node.op_type == "Cast" and _attr_int(node, "to") not in FLOAT_TYPES:
            continue
        if node.op_type == "Where" and not any(i in tainted for i in node.input[1:]):
            continue  # only the condition came from a mask: the values did not
        tainted.update(node.output)
    return [n.name for n in found if n.name]


def _attr_int(node: onnx.NodeProto, name: str) -> int | None:
    return next((a.i for a in node.attribute if a.name == name), None)
