"""Lower-precision weights without calibration: float16, and 4-bit weight-only MatMul.

quantize.int4 also rewrites Gemm nodes with constant weights as MatMul (+ Add for the bias), so
models whose linear layers export as Gemm (GPT-2's Conv1D, a classifier head) shrink too, and it
stores embedding tables as int8 unless that misses the accuracy budget.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, field_validator

from compress.errors import ConfigError
from compress.models.onnx_files import replace_onnx, save_onnx
from compress.passes.base import OnnxPass, OnnxPassParams, PassDetails, PassInput, PassResult
from compress.passes.registry import register
from compress.quant.fallback import accuracy_budget
from compress.quant.int8 import excluded_nodes
from compress.quant.sensitivity.cache import AnalysisCache

if TYPE_CHECKING:
    from compress.passes.context import PassContext


class Float16Params(OnnxPassParams):
    keep_io_types: bool = Field(
        default=True, description="keep float32 inputs and outputs (casts inside the graph)"
    )
    exclude: list[str] = Field(
        default_factory=list, description="node names or op types to keep in float32"
    )


@register("quantize.fp16")
class Float16(OnnxPass[Float16Params]):
    """float16 weights and compute; inputs and outputs stay float32 unless asked.

    Sample YAML:
        - type: quantize.fp16
          keep_io_types: true
    """

    Params = Float16Params
    Details = PassDetails  # nothing to report beyond the stage's figures
    reads = ()

    def apply(self, given: PassInput, ctx: PassContext) -> PassResult:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        source, target = given.source, given.target
        # Only node names: an op_block_list would replace ORT's default list of ops that have
        # no float16 kernels.
        keep_float = excluded_nodes(source, self.params.exclude, self.key)
        converted = convert_float_to_float16(
            onnx.load(str(source)),
            keep_io_types=self.params.keep_io_types,
            node_block_list=keep_float or None,
        )
        onnx.save(converted, str(target))
        return PassResult()


class Int4Details(PassDetails):
    gemm_rewritten_as_matmul: int | None = None
    embedding_tables_int8: list[str] = []
    embeddings_drop: float | None = Field(
        default=None, description="the drop the int8 embedding tables cost on data.eval"
    )
    embeddings_kept_float: list[str] = Field(
        default_factory=list, description="tables kept in float32: int8 would miss the budget"
    )

    def lines(self) -> list[str]:
        tables = self.embedding_tables_int8
        stored = [f"embedding tables stored as int8: {', '.join(tables)}"] if tables else []
        return super().lines() + stored


class Int4Params(OnnxPassParams):
    block_size: int = Field(default=32, ge=16, description="weights per scale (a power of 2)")
    symmetric: bool = True
    exclude: list[str] = Field(
        default_factory=list, description="MatMul or Gemm node names (or op types) to skip"
    )
    embeddings_int8: bool | Literal["auto"] = Field(
        default="auto",
        description="also store embedding tables (constant Gather) as int8; auto: yes, unless "
        "an accuracy budget and data.eval show they make the model miss it",
    )
    max_accuracy_drop: float | None = Field(
        default=None,
        ge=0,
        description="budget on data.eval for embeddings_int8: auto (default: "
        "gates.max_accuracy_drop)",
    )

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError("must be a power of 2 (16, 32, 64, 128, ...)")
        return value


@register("quantize.int4")
class Int4WeightOnly(OnnxPass[Int4Params]):
    """4-bit weight-only MatMul/Gemm (ONNX Runtime's MatMulNBits): their weights shrink ~6x.

    Embedding tables (Gather from a constant) are stored as int8 with one scale per column and
    dequantized after the lookup, so a transformer's vocabulary shrinks 4x; with a budget
    (max_accuracy_drop or gates.max_accuracy_drop) and data.eval, unless the model meets it only
    without them, or they alone cost more than it. On CPU, MatMulNBits is often no
    faster than float MatMul (the report warns when it is slower): int4 is for size.

    Sample YAML:
        - type: quantize.int4
          block_size: 32
    """

    Params = Int4Params
    Details = Int4Details
    # the embedding tables' int8 is judged on the report's output against the budget
    reads = ("report.metric", "report.output", "gates.max_accuracy_drop")

    def check(self, config) -> None:
        self.require_eval_for_budget(config)

    def apply(self, given: PassInput, ctx: PassContext) -> PassResult:
        import onnx

        source, target = given.source, given.target
        proto = onnx.load(str(source))
        rewritten = gemms_as_matmul(proto)
        constants = {i.name for i in proto.graph.initializer}
        if not any(n.op_type == "MatMul" and n.input[1] in constants for n in proto.graph.node):
            raise ConfigError(
                f"{self.key}: {self.name} found no MatMul or Gemm with constant weights in the "
                "model (Conv is not 4-bit quantized); use quantize.static or quantize.dynamic"
            )
        if rewritten:
            ctx.log(f"  {len(rewritten)} Gemm node(s) rewritten as MatMul for 4-bit weights")
        quantizer_class = _matmul_nbits_quantizer()
        quantizer = quantizer_class(
            proto,
            block_size=self.params.block_size,
            is_symmetric=self.params.symmetric,
            nodes_to_exclude=excluded_nodes(source, self.params.exclude, self.key),
        )
        quantizer.process()
        save_onnx(quantizer.model.model, target)  # weights over 2 GB: external data
        details = Int4Details(gemm_rewritten_as_matmul=len(rewritten))
        if self.params.embeddings_int8 is not False:
            self._embeddings(source, target, ctx, details)
        return PassResult(details=details)

    def _embeddings(
        self, source: Path, target: Path, ctx: PassContext, details: Int4Details
    ) -> None:
        """Store `target`'s embedding tables as int8, unless `auto` and the budget says no; says
        which in `details`."""
        import onnx

        model = onnx.load(str(target))
        tables = quantize_embeddings(model)
        if not tables:
            return
        budget = accuracy_budget(self.params.max_accuracy_drop, ctx)
        judged = self.params.embeddings_int8 == "auto" and budget is not None and ctx.eval
        candidate = target.with_suffix(".embeddings.onnx") if judged else target
        save_onnx(model, candidate)
        details.embedding_tables_int8 = tables
        if judged:
            verdict = _judge(source, candidate, budget, ctx)
            details.embeddings_drop = verdict.drop
            # Over budget, the tables are to blame if the model meets it without them, or if
            # they alone cost more than the whole budget.
            without = None if verdict.met else _judge(source, target, budget, ctx).drop
            if without is not None and (without <= budget or verdict.drop - without > budget):
                candidate.unlink()
                ctx.log(
                    f"  int8 embedding tables take the drop to {verdict.drop} (budget {budget}, "
                    f"{without} without them): kept in float32; embeddings_int8: true forces them"
                )
                details.embedding_tables_int8, details.embeddings_kept_float = [], tables
                return
            replace_onnx(candidate, target)
        ctx.log(f"  {len(tables)} embedding table(s) stored as int8: {', '.join(tables)}")


def _judge(source: Path, candidate: Path, budget: float, ctx: PassContext):
    """The drop of `candidate` against the float `source` on data.eval."""
    from compress.quant.budget import BudgetJudge

    output, metric = ctx.judged_output, ctx.metric
    reference = ctx.shared(AnalysisCache).reference_outputs(source, ctx.eval, output, metric)
    return BudgetJudge(reference, ctx.eval, metric, budget, output).full(candidate)


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
        new_nodes.append(helper.make_node("MatMul", [node.input[0], stored], [product], node.name))
        if bias:
            if beta != 1.0:
                scaled = numpy_helper.to_array(graph.initializers[bias]) * beta
                bias = graph.add_initializer(f"{bias}_beta", scaled.astype(np.float32))
            new_nodes.append(
                helper.make_node("Add", [product, bias], node.output, f"{node.name}_bias")
            )
        rewritten.append(node.name)
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
        _drop_unused_initializers(model)
    return rewritten


def _drop_unused_initializers(model) -> None:
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


def _matmul_nbits_quantizer():
    """Import the quantizer without letting it turn every library's logging up to INFO."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    root.setLevel(level)
    root.handlers[:] = handlers
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    return MatMulNBitsQuantizer
