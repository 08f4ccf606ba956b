"""quantize.fp16: float16 weights and compute, without calibration."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from compress.models.onnx_files import save_onnx
from compress.passes.base import OnnxPass, OnnxPassParams, PassDetails, PassInput, PassResult
from compress.passes.registry import register
from compress.quant.int8 import excluded_nodes

if TYPE_CHECKING:
    from compress.passes.context import PassContext


class Float16Params(OnnxPassParams):
    keep_io_types: bool = Field(
        default=True, description="keep float32 inputs and outputs (casts inside the graph)"
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="nodes to keep in float32: node names, op types, torch module names or globs",
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

        source, target = given.files()
        # Only node names: an op_block_list would replace ORT's default list of ops that have
        # no float16 kernels.
        keep_float = excluded_nodes(source, self.params.exclude, self.key)
        converted = convert_float_to_float16(
            onnx.load(str(source)),
            keep_io_types=self.params.keep_io_types,
            node_block_list=keep_float or None,
        )
        save_onnx(converted, target)
        return PassResult()
