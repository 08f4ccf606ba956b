"""Which tensor of the quantized graph stands for a tensor of the float graph.

A quantizer keeps the names of the tensors it does not remove. In a QDQ graph a quantized op's
output X is followed by QuantizeLinear -> DequantizeLinear, and its consumers read the
dequantized copy; for a graph output the op's own output is renamed and the DequantizeLinear
writes X. The twin is always the op's own output, before that pair: the rounding of X is then
charged to X's consumers (through their inputs), which is what keeping a node and the producers
of its inputs in float removes (ONNX Runtime rounds X when its producer is quantized, whatever
the consumers).

The twin is clamped to the pair's range, though: with a Conv+Relu (or Clip) fused, the Conv's own
output still holds the negative values that the QuantizeLinear's range cuts off, and only the
clamped values equal the Relu's output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# the integer range of each QuantizeLinear zero-point type (uint8 when there is none)
RANGES = {
    np.dtype(np.uint8): (0, 255),
    np.dtype(np.int8): (-128, 127),
    np.dtype(np.uint16): (0, 65535),
    np.dtype(np.int16): (-32768, 32767),
}


@dataclass(frozen=True)
class Twin:
    name: str  # the quantized graph's tensor
    low: float = -np.inf  # the range its QuantizeLinear keeps
    high: float = np.inf

    def clamp(self, values: np.ndarray) -> np.ndarray:
        if self.low == -np.inf and self.high == np.inf:
            return values
        return np.clip(values, self.low, self.high)


def quantized_twins(quant_graph) -> dict[str, Twin]:
    """Float tensor name -> its twin, for every tensor a QuantizeLinear -> DequantizeLinear
    pair follows (other tensors are their own twins)."""
    from onnx import numpy_helper

    constants = {i.name: i for i in quant_graph.initializer}
    consumers: dict[str, list] = {}
    for node in quant_graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    twins: dict[str, Twin] = {}
    for node in quant_graph.node:
        if node.op_type != "QuantizeLinear":
            continue
        after = [c for c in consumers.get(node.output[0], []) if c.op_type == "DequantizeLinear"]
        if not after:
            continue
        low, high = _range(node, constants, numpy_helper)
        own = Twin(node.input[0], low, high)
        twins.setdefault(node.input[0], own)
        twins.setdefault(after[0].output[0], own)  # a graph output the pair writes
    return twins


def _range(quantize, constants, numpy_helper) -> tuple[float, float]:
    """The float range a per-tensor QuantizeLinear represents; unbounded when it is per-channel
    or its scale is computed (not a constant)."""
    scale = constants.get(quantize.input[1])
    zero = constants.get(quantize.input[2]) if len(quantize.input) > 2 else None
    if scale is None or (len(quantize.input) > 2 and quantize.input[2] and zero is None):
        return -np.inf, np.inf
    scale = numpy_helper.to_array(scale).astype(np.float64)
    zero = numpy_helper.to_array(zero) if zero is not None else np.zeros((), np.uint8)
    if scale.size != 1 or zero.dtype not in RANGES:
        return -np.inf, np.inf
    qmin, qmax = RANGES[zero.dtype]
    offset = float(zero.astype(np.float64).reshape(-1)[0])
    step = float(scale.reshape(-1)[0])
    return (qmin - offset) * step, (qmax - offset) * step
