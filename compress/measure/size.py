"""Size on disk, parameter count and weight sparsity of an ONNX model (and, with MACs, all of a
stage's footprint at once)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from compress.records import Count, Record, Share

# Inputs that carry quantization scales and zero points rather than weights, by op and position.
_QUANT_PARAM_INPUTS = {
    "QuantizeLinear": (1, 2),
    "DequantizeLinear": (1, 2),
    "MatMulInteger": (2, 3),
    "ConvInteger": (2, 3),
    "MatMulNBits": (2, 3),
}


def _weights(graph) -> list:
    """The weight initializers: quantization scales and zero points left out."""
    quant_params = {
        node.input[i]
        for node in graph.node
        for i in _QUANT_PARAM_INPUTS.get(node.op_type, ())
        if i < len(node.input)
    }
    return [init for init in graph.initializer if init.name not in quant_params]


def _packed_counts(graph) -> dict[str, int]:
    """MatMulNBits packs several weights per byte: its N x K attributes give the real count."""
    return {
        node.input[1]: math.prod(a.i for a in node.attribute if a.name in ("N", "K"))
        for node in graph.node
        if node.op_type == "MatMulNBits"
    }


def count_params(proto) -> int:
    """Elements of the weight initializers of a loaded ONNX model (scales and zero points of
    quantization excluded)."""
    graph = proto.graph
    packed = _packed_counts(graph)
    return sum(packed.get(init.name, math.prod(init.dims)) for init in _weights(graph))


def weight_sparsity(proto) -> float:
    """The fraction of weight elements of a loaded ONNX model that are exactly zero (packed
    4-bit weights not read)."""
    from onnx import numpy_helper

    graph = proto.graph
    packed = _packed_counts(graph)
    zeros = total = 0
    for init in _weights(graph):
        if init.name not in packed:
            values = numpy_helper.to_array(init)
            zeros += values.size - int(np.count_nonzero(values))
            total += values.size
    return zeros / total if total else 0.0


def size_bytes(path: Path) -> int:
    return Path(path).stat().st_size


class Footprint(Record):
    """A model file's size and compute."""

    size_bytes: Count
    gzip_bytes: Count
    params: Count
    macs: Count
    sparsity: Share


def footprint(path: Path, one_sample: list[np.ndarray]) -> Footprint:
    """An ONNX file's size, gzipped size, params, MACs and sparsity, from one read of it;
    `one_sample` (a batch of 1) gives MACs their shapes."""
    import onnx

    from compress.measure.macs import count_macs

    proto = onnx.load(str(path))
    return Footprint(
        size_bytes=size_bytes(path),
        gzip_bytes=gzip_bytes(path),
        params=count_params(proto),
        macs=count_macs(proto, one_sample),
        sparsity=round(weight_sparsity(proto), 4),
    )


def gzip_bytes(path: Path) -> int:
    """Size after gzip -6: what a download or an artifact store actually moves."""
    import gzip

    return len(gzip.compress(Path(path).read_bytes(), compresslevel=6))
