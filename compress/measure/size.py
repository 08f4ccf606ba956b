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


def weight_sparsity(proto, folder: Path | None = None) -> float:
    """The fraction of weight elements of a loaded ONNX model that are exactly zero (packed
    4-bit weights not read). A model loaded without its external data reads each tensor's from
    `folder` in turn, never all at once."""
    from onnx import numpy_helper

    graph = proto.graph
    packed = _packed_counts(graph)
    zeros = total = 0
    for init in _weights(graph):
        if init.name not in packed:
            values = numpy_helper.to_array(init, str(folder) if folder else "")
            if init.data_location == init.EXTERNAL:
                init.ClearField("raw_data")  # to_array read it into the tensor: let it go
            zeros += values.size - int(np.count_nonzero(values))
            total += values.size
    return zeros / total if total else 0.0


def model_files(path: Path) -> list[Path]:
    """The model file and, where its weights went there, its external data file."""
    from compress.models.onnx_files import data_file

    extra = data_file(Path(path))
    return [Path(path), extra] if extra.exists() else [Path(path)]


def size_bytes(path: Path) -> int:
    """Bytes on disk of the model: its file and its external data file (weights over 2 GB)."""
    return sum(part.stat().st_size for part in model_files(path))


class Footprint(Record):
    """A model file's size and compute."""

    size_bytes: Count
    gzip_bytes: Count
    params: Count
    macs: Count
    sparsity: Share


def footprint(path: Path, one_sample: list[np.ndarray]) -> Footprint:
    """An ONNX file's size, gzipped size, params, MACs and sparsity;
    `one_sample` (a batch of 1) gives MACs their shapes."""
    import onnx

    from compress.measure.macs import macs_at

    proto = onnx.load(str(path), load_external_data=False)  # external weights: read one by one
    params, sparsity = count_params(proto), weight_sparsity(proto, Path(path).parent)
    del proto  # before ONNX Runtime opens the model to count MACs: its weights held once
    return Footprint(
        size_bytes=size_bytes(path),
        gzip_bytes=gzip_bytes(path),
        params=params,
        macs=macs_at(path, one_sample),
        sparsity=round(sparsity, 4),
    )


GZIP_CHUNK = 16 * 2**20  # read this much at a time: a model's file is never held whole


def gzip_bytes(path: Path) -> int:
    """Size after gzip -6 of the model file and its external data file, if any: what a
    download or an artifact store actually moves. Streamed, so a weight file of gigabytes is
    never in memory at once."""
    import zlib

    packer = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: a gzip header, as gzip.compress
    total = 0
    for part in model_files(path):
        with part.open("rb") as stream:
            while chunk := stream.read(GZIP_CHUNK):
                total += len(packer.compress(chunk))
    return total + len(packer.flush())
