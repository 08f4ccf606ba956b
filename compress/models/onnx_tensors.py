"""An ONNX model's tensors, sized from what they declare before any of their data is allocated.

A tensor declares its size by its dims; onnx.load then reads external data by that declaration
and ONNX Runtime makes every sparse initializer dense, so a small file can make them allocate
terabytes. The model is parsed without its external data; every tensor it carries (initializers,
sparse initializers, tensors in node attributes such as `Constant` values, in every subgraph and
function) is sized as prod(dims) x element size, and refused when it is above the ceiling or
when the data actually present (raw bytes, typed values, or the external file) disagrees.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from compress.config.limits import MAX_ONNX_MODEL_BYTES, MAX_ONNX_TENSOR_BYTES

if TYPE_CHECKING:
    import onnx

_SUB_BYTE_BITS = {"INT4": 4, "UINT4": 4, "FLOAT4E2M1": 4, "INT2": 2, "UINT2": 2}
_SUB_BYTE_BITS |= {"FLOAT6E2M3": 6, "FLOAT6E3M2": 6}


def onnx_tensor_problem(proto, base_dir: Path) -> str | None:
    """One line naming the first tensor that is too large or whose data does not match its
    dims; None when all fit. `proto` was loaded with load_external_data=False."""
    total = 0
    for where, tensor, dense_dims in _tensors(proto):
        dims = list(tensor.dims) if dense_dims is None else dense_dims
        declared = _declared_bytes(tensor, dims)
        if declared is None:
            return f"tensor {where} has negative dims or an unknown data type"
        if declared > MAX_ONNX_TENSOR_BYTES:
            return (
                f"tensor {where} declares {declared:,} bytes (dims {dims}), more "
                f"than the {MAX_ONNX_TENSOR_BYTES:,} allowed for one tensor; refused before "
                "allocating it"
            )
        total += declared
        if total > MAX_ONNX_MODEL_BYTES:
            return f"its tensors declare more than the {MAX_ONNX_MODEL_BYTES:,} bytes allowed"
        if dense_dims is None:  # a sparse tensor's parts are checked as tensors of their own
            problem = _data_problem(tensor, declared, base_dir)
            if problem:
                return f"tensor {where} declares {declared:,} bytes but {problem}"
    return None


def _tensors(proto: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto, list[int] | None]]:
    """(name, TensorProto, dense dims of a sparse tensor or None) for every tensor in the
    model: its graph and functions, their nodes' attributes, and the subgraphs in those."""
    graphs = [proto.graph]
    node_lists = [f.node for f in proto.functions]
    while graphs or node_lists:
        if graphs:
            graph = graphs.pop()
            yield from ((t.name, t, None) for t in graph.initializer)
            for sparse in graph.sparse_initializer:
                yield from _sparse(sparse.values.name or "(sparse)", sparse)
            node_lists.append(graph.node)
            continue
        for node in node_lists.pop():
            for attr in node.attribute:
                where = f"{attr.name} of node {node.name or node.op_type}"
                tensors, sparse = list(attr.tensors), list(attr.sparse_tensors)
                if attr.HasField("t"):  # a Constant's value, among others
                    tensors.append(attr.t)
                if attr.HasField("sparse_tensor"):
                    sparse.append(attr.sparse_tensor)
                yield from ((t.name or where, t, None) for t in tensors)
                for s in sparse:
                    yield from _sparse(where, s)
                graphs.extend(attr.graphs)
                if attr.HasField("g"):  # If / Loop / Scan bodies
                    graphs.append(attr.g)


def _sparse(
    where: str, sparse: onnx.SparseTensorProto
) -> Iterator[tuple[str, onnx.TensorProto, list[int] | None]]:
    yield f"{where} (made dense)", sparse.values, list(sparse.dims)
    yield f"{where} (values)", sparse.values, None
    yield f"{where} (indices)", sparse.indices, None


def _declared_bytes(tensor, dims: list[int]) -> int | None:
    import onnx

    known = tensor.data_type in onnx.TensorProto.DataType.values()
    if any(d < 0 for d in dims) or not known or tensor.data_type == onnx.TensorProto.UNDEFINED:
        return None
    count = math.prod(dims)
    type_name = onnx.TensorProto.DataType.Name(tensor.data_type)
    if type_name == "STRING":
        return sum(len(s) for s in tensor.string_data)  # sized by what is there
    if type_name in _SUB_BYTE_BITS:
        return -(-count * _SUB_BYTE_BITS[type_name] // 8)
    return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def _data_problem(tensor, declared: int, base_dir: Path) -> str | None:
    """What is wrong with the data present for a tensor of `declared` bytes, if anything."""
    import onnx

    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return _external_problem(tensor, declared, base_dir)
    if tensor.HasField("raw_data"):
        present = len(tensor.raw_data)
        return None if present == declared else f"holds {present:,} bytes of raw data"
    name = onnx.TensorProto.DataType.Name(tensor.data_type)
    if name in ("STRING", *_SUB_BYTE_BITS):
        return None  # sized by what is there / packed in typed fields; nothing to overrun
    field = onnx.helper.tensor_dtype_to_field(tensor.data_type)
    values = len(getattr(tensor, field))
    expected = math.prod(tensor.dims) * (2 if name.startswith("COMPLEX") else 1)
    return None if values == expected else f"holds {values:,} values ({expected:,} declared)"


def _external_problem(tensor, declared: int, base_dir: Path) -> str | None:
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    target = (base_dir / location).resolve()
    if not location or os.path.isabs(location) or ".." in Path(location).parts:
        return f"its external data location {location!r} is not a file beside the model"
    if not target.is_relative_to(base_dir.resolve()):
        return f"its external data {location!r} leads outside the model's folder"
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        return "its external data offset or length is not a number"
    try:
        mode = target.stat()
    except OSError:
        return f"its external data file {location!r} is missing"
    if not stat.S_ISREG(mode.st_mode):
        return f"its external data {location!r} is not a regular file"
    if length is not None and length != declared:
        return f"its external data entry says {length:,} bytes"
    available = mode.st_size - max(offset, 0)
    # Without a length onnx reads to the end of the file: that must be the tensor, exactly.
    if offset < 0 or available < declared or (length is None and available != declared):
        return f"its external data file {location!r} has {max(available, 0):,} bytes for it"
    return None
