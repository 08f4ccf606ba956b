"""int8 quantization of the exported ONNX graph with onnxruntime.quantization."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from compress.errors import ConfigError, first_line
from compress.passes.base import OnnxPass, OnnxPassParams
from compress.passes.registry import register

if TYPE_CHECKING:
    from compress.config import LoadedConfig
    from compress.context import Context


def preprocess(source: Path, target: Path, ctx: Context) -> Path:
    """ORT's pre-processing (optimise + shape inference), so quantization sees shaped tensors.

    Symbolic shape inference crashes on some exported graphs; then it is skipped, and if
    pre-processing still fails the graph is quantized as exported.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    for skip_symbolic in (False, True):
        try:
            quant_pre_process(str(source), str(target), skip_symbolic_shape=skip_symbolic)
            return target
        except Exception as e:  # noqa: PERF203 - a fallback, not a loop over data
            ctx.log(
                f"pre-processing (skip_symbolic_shape={skip_symbolic}) failed: {first_line(e, 120)}"
            )
    return source


def excluded_nodes(model_path: Path, exclude: list[str], key: str) -> list[str]:
    """Node names for `exclude`, whose entries are node names or op types of the graph."""
    import difflib

    import onnx

    nodes = onnx.load(str(model_path), load_external_data=False).graph.node
    names, op_types = {n.name for n in nodes}, {n.op_type for n in nodes}
    for entry in exclude:
        if entry not in names and entry not in op_types:
            close = difflib.get_close_matches(entry, sorted(names | op_types), n=3, cutoff=0.4)
            hint = f"close names: {', '.join(close)}" if close else "see the model's node names"
            raise ConfigError(
                f"{key}.exclude: {entry!r} is neither a node nor an op type of the model; {hint}"
            )
    return [n.name for n in nodes if n.name in exclude or n.op_type in exclude]


class QuantizeParams(OnnxPassParams):
    per_channel: bool = False
    op_types: list[str] | None = Field(
        default=None, description="op types to quantize (default: see the pass)"
    )
    exclude: list[str] = Field(
        default_factory=list, description="node names or op types to keep in float"
    )
    reduce_range: bool = Field(default=False, description="7-bit weights, for CPUs without VNNI")


# ConvInteger (dynamic int8 convolution) runs several times slower than float Conv in ONNX Runtime
# on CPU (measured here: 5x on the digits CNN), so convolutions are quantized only when asked.
DYNAMIC_DEFAULT_OPS = ["MatMul", "Attention", "LSTM", "Gather"]


@register("quantize.dynamic")
class DynamicQuantization(OnnxPass):
    """int8 weights, activations quantized on the fly; best for MatMul-heavy (transformer) models.

    By default MatMul, Attention, LSTM and Gather are quantized; Conv only if op_types names it
    (dynamic int8 convolutions are slower than float ones in ONNX Runtime).

    Sample YAML:
        - type: quantize.dynamic
          per_channel: false
          op_types: [MatMul]
    """

    Params = QuantizeParams

    def apply(self, source: Path, target: Path, ctx: Context) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        prepared = preprocess(source, target.with_suffix(".pre.onnx"), ctx)
        quantize_dynamic(
            str(prepared),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=self.params.per_channel,
            op_types_to_quantize=(
                DYNAMIC_DEFAULT_OPS if self.params.op_types is None else self.params.op_types
            ),
            nodes_to_exclude=excluded_nodes(prepared, self.params.exclude, self.key),
            reduce_range=self.params.reduce_range,
        )


class StaticParams(QuantizeParams):
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(
        default=99.999, gt=0, le=100, description="with calibration: percentile"
    )
    symmetric_activations: bool = False
    activation_type: Literal["int8", "uint8"] = "uint8"
    batch_size: int = Field(default=32, ge=1, description="calibration batch size")


@register("quantize.static")
class StaticQuantization(OnnxPass):
    """int8 weights and activations (QDQ), scales calibrated on data.calibration.

    Sample YAML:
        - type: quantize.static
          per_channel: true
          calibration: minmax
    """

    Params = StaticParams

    def check(self, config: LoadedConfig) -> None:
        if config.config.data.calibration is None:
            raise ConfigError(
                f"{self.key}: {self.name} needs data.calibration: add "
                "data: {calibration: {path: ..., inputs: [...]}} to the config"
            )

    def apply(self, source: Path, target: Path, ctx: Context) -> None:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        method = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[self.params.calibration]
        activation = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
        prepared = preprocess(source, target.with_suffix(".pre.onnx"), ctx)
        quantize_static(
            str(prepared),
            str(target),
            _CalibrationReader(ctx, self.params.batch_size),
            quant_format=QuantFormat.QDQ,
            per_channel=self.params.per_channel,
            op_types_to_quantize=self.params.op_types,
            nodes_to_exclude=excluded_nodes(prepared, self.params.exclude, self.key),
            reduce_range=self.params.reduce_range,
            activation_type=activation[self.params.activation_type],
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            extra_options={
                "CalibPercentile": self.params.percentile,
                "ActivationSymmetric": self.params.symmetric_activations,
            },
        )


class _CalibrationReader:
    """Feeds data.calibration in batches, as onnxruntime's CalibrationDataReader protocol asks."""

    def __init__(self, ctx: Context, batch_size: int):
        self._batches = (
            dict(zip(ctx.input_names, batch, strict=True))
            for batch in ctx.calibration.batches(batch_size)
        )

    def get_next(self):
        return next(self._batches, None)

    def rewind(self):  # not needed for one calibration pass
        pass
