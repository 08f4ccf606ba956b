"""Lower-precision weights without calibration: float16, and 4-bit weight-only MatMul."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from compress.errors import ConfigError
from compress.passes.base import OnnxPass, OnnxPassParams
from compress.passes.quantize import excluded_nodes
from compress.passes.registry import register

if TYPE_CHECKING:
    from compress.context import Context


class Float16Params(OnnxPassParams):
    keep_io_types: bool = Field(
        default=True, description="keep float32 inputs and outputs (casts inside the graph)"
    )
    exclude: list[str] = Field(
        default_factory=list, description="node names or op types to keep in float32"
    )


@register("quantize.fp16")
class Float16(OnnxPass):
    """float16 weights and compute; inputs and outputs stay float32 unless asked.

    Sample YAML:
        - type: quantize.fp16
          keep_io_types: true
    """

    Params = Float16Params

    def apply(self, source: Path, target: Path, ctx: Context) -> None:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # Only node names: an op_block_list would replace ORT's default list of ops that have
        # no float16 kernels.
        keep_float = excluded_nodes(source, self.params.exclude, self.key)
        converted = convert_float_to_float16(
            onnx.load(str(source)),
            keep_io_types=self.params.keep_io_types,
            node_block_list=keep_float or None,
        )
        onnx.save(converted, str(target))


class Int4Params(OnnxPassParams):
    block_size: int = Field(default=32, ge=16, description="weights per scale (a power of 2)")
    symmetric: bool = True
    exclude: list[str] = Field(default_factory=list, description="MatMul node names to skip")
    embeddings_int8: bool = Field(
        default=False, description="also store embedding tables (constant Gather) as int8"
    )

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError("must be a power of 2 (16, 32, 64, 128, ...)")
        return value


@register("quantize.int4")
class Int4WeightOnly(OnnxPass):
    """4-bit weight-only MatMul (ONNX Runtime's MatMulNBits): MatMul weights shrink ~6x.

    With embeddings_int8, embedding tables (Gather from a constant) are stored as int8 with one
    scale per column and dequantized after the lookup, so a transformer's vocabulary shrinks 4x.

    Sample YAML:
        - type: quantize.int4
          block_size: 32
          embeddings_int8: true
    """

    Params = Int4Params

    def apply(self, source: Path, target: Path, ctx: Context) -> None:
        import onnx

        proto = onnx.load(str(source))
        constants = {i.name for i in proto.graph.initializer}
        if not any(n.op_type == "MatMul" and n.input[1] in constants for n in proto.graph.node):
            raise ConfigError(
                f"{self.key}: {self.name} found no MatMul with constant weights in the model "
                "(Gemm and Conv are not 4-bit quantized); use quantize.static or quantize.dynamic"
            )
        quantizer_class = _matmul_nbits_quantizer()
        quantizer = quantizer_class(
            proto,
            block_size=self.params.block_size,
            is_symmetric=self.params.symmetric,
            nodes_to_exclude=excluded_nodes(source, self.params.exclude, self.key),
        )
        quantizer.process()
        details = None
        if self.params.embeddings_int8:
            tables = quantize_embeddings(quantizer.model.model)
            ctx.log(f"  {len(tables)} embedding table(s) stored as int8: {', '.join(tables)}")
            details = {"embedding_tables_int8": tables}
        quantizer.model.save_model_to_file(str(target), use_external_data_format=False)
        return details


def quantize_embeddings(model) -> list[str]:
    """Store each Gather's constant float table [rows, dim] as int8 (symmetric, one scale per
    column) and dequantize the gathered rows; returns the tables' names."""
    import numpy as np
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


def _matmul_nbits_quantizer():
    """Import the quantizer without letting it turn every library's logging up to INFO."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    root.setLevel(level)
    root.handlers[:] = handlers
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    return MatMulNBitsQuantizer
