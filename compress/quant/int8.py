"""int8 quantization of the exported ONNX graph with onnxruntime.quantization."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

from pydantic import Field

from compress.errors import first_line
from compress.measure.evaluate import fitting_samples, onnx_output
from compress.models.onnx_files import data_file, keeps_external_data
from compress.passes.base import (
    BudgetMiss,
    OnnxPass,
    OnnxPassParams,
    PassDetails,
    PassInput,
    PassResult,
)
from compress.passes.registry import register
from compress.quant import ort_tools, recovery
from compress.quant.fallback import (
    Fallback,
    QuantizeJob,
    accuracy_budget,
    quantize_within_budget,
    relative_error,
    sensitivity_samples,
)
from compress.quant.module_names import shown
from compress.quant.recovery import Int8Plan, Recovery, StaticPlan

if TYPE_CHECKING:
    from compress.config import LoadedConfig
    from compress.passes.context import PassContext


def preprocess(source: Path, target: Path, ctx: PassContext) -> Path:
    """ORT's pre-processing (optimise + shape inference), so quantization sees shaped tensors.

    Symbolic shape inference crashes on some exported graphs; then it is skipped, and if
    pre-processing still fails the graph is quantized as exported. When it gives up, ONNX
    Runtime saves `sym_shape_infer_temp.onnx` in the current directory: it runs from `target`'s
    folder (the run's private one), so that file does not land in the user's. With a stage
    cache, the result is kept there for the next run that quantizes the same file.
    """
    return ctx.derived(
        "ort-quant-pre-process", source, target, lambda: _preprocess(source, target, ctx)
    )


def _preprocess(source: Path, target: Path, ctx: PassContext) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    ort_tools.import_without_torch()
    external = {}
    if keeps_external_data(source):  # its weights may be past protobuf's 2 GiB
        external = {
            "save_as_external_data": True,
            "all_tensors_to_one_file": True,
            "external_data_location": data_file(target).name,
        }
    for skip_symbolic in (False, True):
        try:
            with working_directory(target.parent):
                quant_pre_process(
                    str(source.resolve()), str(target.resolve()),
                    skip_symbolic_shape=skip_symbolic, **external,
                )  # fmt: skip
            return target
        except Exception as e:  # noqa: PERF203 - a fallback, not a loop over data
            ctx.log(
                f"pre-processing (skip_symbolic_shape={skip_symbolic}) failed: {first_line(e, 120)}"
            )
    return source


@contextmanager
def working_directory(folder: Path):
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


@contextmanager
def quiet_root_logger():
    """onnxruntime.quantization warns through the root logger about things that are fine
    (e.g. no per-channel axis on a LayerNorm weight); keep those off the user's terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def excluded_nodes(
    model_path: Path, exclude: list[str], key: str, names_from: Path | None = None
) -> list[str]:
    """Node names for `exclude`, whose entries are node names, op types, torch module names or
    globs (compress.quant.module_names); modules as `names_from` (the pass's input, whose nodes
    still carry the export's metadata) and `model_path` record them."""
    import onnx

    from compress.quant.module_names import module_names, resolve_exclude

    if not exclude:
        return []
    modules = module_names(model_path)
    if names_from is not None and names_from != model_path:
        modules |= module_names(names_from)
    graph = onnx.load(str(model_path), load_external_data=False).graph
    return resolve_exclude(graph, exclude, key, modules)


def keep_shape_annotations(source: Path, target: Path) -> None:
    """Drop the value_info (inferred shapes) that pre-processing and the quantizer leave in
    `target` when `source` had none, so quantization does not change what ONNX Runtime fuses.

    With those shapes ORT fuses Add + LayerNormalization into SkipLayerNormalization, which ran
    slower here: the int8 transformer sample took 4.11 ms with the annotations and 3.54 ms without
    (the fp32 graph with shapes added: 5.84 vs 5.33 ms). Static int8 CNNs time the same either way.
    """
    import onnx

    if onnx.load(str(source), load_external_data=False).graph.value_info:
        return
    model = onnx.load(str(target), load_external_data=False)  # the weights stay where they are
    if model.graph.value_info:
        del model.graph.value_info[:]
        target.write_bytes(model.SerializeToString())


def attention_masks_field():
    return Field(
        default=True,
        description="clamp -inf / huge negative mask constants to -1e4 and keep the masked "
        "attention scores (mask Where/Add and Softmax) in float",
    )


class QuantizeParams(OnnxPassParams):
    op_types: list[str] | None = Field(
        default=None, description="op types to quantize (default: see the pass)"
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="nodes to keep in float: node names, op types, torch module names "
        "(blocks.15.conv_pwl) or globs (blocks.1*)",
    )
    reduce_range: bool = Field(default=False, description="7-bit weights, for CPUs without VNNI")
    max_accuracy_drop: float | None = Field(
        default=None,
        ge=0,
        description="keep the costliest nodes in float until the drop on data.eval is within "
        "this (default: gates.max_accuracy_drop)",
    )
    max_fallback_steps: int = Field(
        default=8,
        ge=0,
        description="at most this many more quantize + evaluate rounds to find the nodes to "
        "keep in float",
    )
    max_float_weight_mb: float | None = Field(
        default=None,
        ge=0,
        description="the fallback keeps in float only node sets whose weights, stored in float "
        "instead of int8, add at most this many MB to the model (default: no limit)",
    )
    sensitivity: bool = Field(
        default=True,
        description="rank the quantized nodes by the error they add, for the report; when "
        "false they are ranked only if the fallback needs it",
    )


class QuantizeDetails(Recovery, Fallback, PassDetails):
    """What an int8 pass (quantize.static, quantize.dynamic) did: how it held accuracy
    (Recovery), its node ranking and fallback (Fallback), and per_channel: auto's choice."""

    per_channel: bool | None = Field(default=None, description="per_channel: auto's choice")
    output_error: dict[str, float] | None = Field(
        default=None, description="per_channel: auto: each way's output error"
    )

    def lines(self) -> list[str]:
        lines = super().lines()
        lines += [self.verdict] if self.verdict else []
        kept = [shown(n, self.modules) for n in self.float_nodes]
        lines += [f"kept in float: {', '.join(kept)}"] if kept else []
        if self.per_channel is not None:
            kind = "per-channel" if self.per_channel else "per-tensor"
            lines.append(f"{kind} weight scales (closer to the float model's outputs)")
        return lines

    def budget_miss(self, stage: str, metric: str) -> BudgetMiss | None:
        """The fallback ended over budget: the closest attempt was kept and written."""
        return self.missed_budget(stage, metric, f"{len(self.float_nodes)} node(s) in float")


QuantizeParamsT = TypeVar("QuantizeParamsT", bound=QuantizeParams)
PlanT = TypeVar("PlanT", bound=Int8Plan)


class Int8Pass(OnnxPass[QuantizeParamsT], Generic[QuantizeParamsT, PlanT]):
    """Shared by the int8 passes: the accuracy-recovery rewrites, pre-processing, `exclude`, and
    the accuracy-aware fallback. A pass settles its plan (`settle`) once per model and hands it
    to every `quantize`; it keeps nothing on itself."""

    Details = QuantizeDetails
    # per_channel: auto and the fallback judge the report's output, the budget is the gate's
    reads = ("report.metric", "report.output", "gates.max_accuracy_drop")

    def check(self, config: LoadedConfig) -> None:
        self.require_eval_for_budget(config)

    def settle(self, prepared: Path, excluded: list[str], ctx: PassContext) -> PlanT:
        """Choose what depends on the model (`prepared`), once, before any quantization."""
        raise NotImplementedError

    def quantize(self, plan: PlanT, target: Path, excluded: list[str]) -> None:
        """Write the plan's model quantized to `target`, keeping `excluded` node names in float."""
        raise NotImplementedError

    def apply(self, given: PassInput, ctx: PassContext) -> PassResult:
        given_source, target = given.files()
        source, rewrites = recovery.rewrite_source(given_source, target, self.params, ctx)
        with quiet_root_logger():
            plan, fallback = self._apply(source, target, ctx, given_source)
        keep_shape_annotations(source, target)
        details = quantize_details(rewrites.merged(plan.recovery), fallback, plan)
        return PassResult(details=details)

    def _apply(
        self, source: Path, target: Path, ctx: PassContext, given: Path
    ) -> tuple[PlanT, Fallback]:
        """The plan settled before quantizing `source` (the pass's input `given`, or its copy
        with the accuracy rewrites), and the fallback's outcome: judged against `given`, so the
        drop is against the pass's input and every pass on the same input (quantize.auto's
        candidates, the run's own evaluation) shares its outputs on data.eval."""
        prepared = preprocess(source, target.with_suffix(".pre.onnx"), ctx)
        excluded = excluded_nodes(prepared, self.params.exclude, self.key, source)
        plan = self.settle(prepared, excluded, ctx)
        budget = accuracy_budget(self.params.max_accuracy_drop, ctx)
        job = self.job(given, plan, excluded)
        return plan, quantize_within_budget(
            job, target, budget, self.params.max_fallback_steps, ctx
        )

    def job(self, source: Path, plan: PlanT, excluded: list[str]) -> QuantizeJob:
        """This pass's quantization of the plan's model, for the fallback, judged against
        `source` (the pass's input)."""
        return QuantizeJob(
            lambda keep_float, path: self.quantize(plan, path, keep_float),
            source,
            plan.prepared,
            excluded,
            scheme=f"{self.name} {self.params.model_dump_json(exclude=SCHEME_NEUTRAL)}",
            report_ranking=self.params.sensitivity,
            max_float_bytes=_bytes(self.params.max_float_weight_mb),
        )


def quantize_details(recovered: Recovery, fallback: Fallback, plan: Int8Plan) -> QuantizeDetails:
    """An int8 pass's Details: what held accuracy, the fallback, per_channel: auto's choice."""
    choice = plan.per_channel_choice if isinstance(plan, DynamicPlan) else None
    details = QuantizeDetails(
        **{name: getattr(recovered, name) for name in recovered.model_fields_set},
        **dict(fallback),
        per_channel=None if choice is None else choice.per_channel,
        output_error=None if choice is None else choice.output_error,
    )
    details.notes = details.recovery_notes()
    return details


# Settings that do not change how a given node is quantized, so sensitivities measured with
# other values still rank it (compress.quant.sensitivity.cache).
SCHEME_NEUTRAL = {
    *("exclude", "op_types", "max_accuracy_drop", "max_fallback_steps", "on_slower"),
    *("sensitivity", "max_float_weight_mb"),
}


def _bytes(megabytes: float | None) -> int | None:
    return None if megabytes is None else int(megabytes * 1e6)


# ConvInteger (dynamic int8 convolution) runs several times slower than float Conv in ONNX Runtime
# on CPU (measured here: 5x on the digits CNN), so convolutions are quantized only when asked.
DYNAMIC_DEFAULT_OPS = ["MatMul", "Attention", "LSTM", "Gather"]


class DynamicParams(QuantizeParams):
    per_channel: bool | Literal["auto"] = Field(
        default="auto",
        description="per-channel weight scales; auto: the one closer to the float model",
    )
    attention_masks: bool = attention_masks_field()


@dataclass
class PerChannelChoice:
    """per_channel: auto's choice, and each way's output error."""

    per_channel: bool
    output_error: dict[str, float]


@dataclass
class DynamicPlan(Int8Plan):
    per_channel: bool = False
    per_channel_choice: PerChannelChoice | None = None  # when per_channel: auto chose


# The outputs per_channel: auto compares, at most: a relative error over 512 positions of a
# decoder's 32000-word logits settles it; 64 windows of them took 3 inferences of 1 GB each.
PER_CHANNEL_BYTES = 64 * 2**20


@register("quantize.dynamic")
class DynamicQuantization(Int8Pass[DynamicParams, DynamicPlan]):
    """int8 weights, activations quantized on the fly; best for MatMul-heavy (transformer) models.

    By default MatMul, Attention, LSTM and Gather are quantized; Conv only if op_types names it
    (dynamic int8 convolutions are slower than float ones in ONNX Runtime). per_channel: auto
    quantizes both ways and keeps the one whose outputs are closer to the float model's.

    Sample YAML:
        - type: quantize.dynamic
          per_channel: auto
          op_types: [MatMul]
    """

    Params = DynamicParams

    def settle(self, prepared: Path, excluded: list[str], ctx: PassContext) -> DynamicPlan:
        """per_channel: auto quantizes both ways and keeps the one closer to the float model."""
        found = recovery.float_nodes(prepared, self.params, self._op_types)
        plan = DynamicPlan(prepared, found.keep_float, found.recovery)
        if self.params.per_channel != "auto":
            plan.per_channel = self.params.per_channel
            return plan
        samples = fitting_samples(
            prepared, sensitivity_samples(ctx), ctx.judged_output, PER_CHANNEL_BYTES
        )
        reference = onnx_output(prepared, samples, ctx.judged_output)
        errors = {}
        for per_channel in (False, True):
            plan.per_channel = per_channel
            trial = ctx.workdir / f"dynamic-per-channel-{per_channel}.onnx"
            self.quantize(plan, trial, excluded)
            trial_output = onnx_output(trial, samples, ctx.judged_output)
            errors[per_channel] = relative_error(reference, trial_output)
        plan.per_channel = errors[True] < errors[False]
        ctx.log(
            f"  per-channel: output error {errors[True]:.4g} vs per-tensor {errors[False]:.4g}; "
            f"keeping {'per-channel' if plan.per_channel else 'per-tensor'}"
        )
        plan.per_channel_choice = PerChannelChoice(
            plan.per_channel, {"per_channel": errors[True], "per_tensor": errors[False]}
        )
        return plan

    @property
    def _op_types(self) -> list[str]:
        return DYNAMIC_DEFAULT_OPS if self.params.op_types is None else self.params.op_types

    def quantize(self, plan: DynamicPlan, target: Path, excluded: list[str]) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            str(plan.prepared),
            str(target),
            use_external_data_format=keeps_external_data(plan.prepared),
            weight_type=QuantType.QInt8,
            per_channel=plan.per_channel,
            op_types_to_quantize=self._op_types,
            nodes_to_exclude=excluded + plan.keep_float,
            reduce_range=self.params.reduce_range,
        )


class StaticParams(QuantizeParams):
    calibration: Literal["minmax", "entropy", "percentile", "auto"] = Field(
        default="minmax",
        description="activation ranges; auto: fit all three on part of data.calibration, keep "
        "the one closest to the float model on held-out calibration samples",
    )
    percentile: float = Field(
        default=99.999, gt=0, le=100, description="with calibration: percentile"
    )
    calibration_samples: int | None = Field(
        default=None, ge=1, description="calibrate on the first N samples (default: all)"
    )
    per_channel: bool = False
    symmetric_activations: bool = False
    activation_type: Literal["int8", "uint8"] = "uint8"
    batch_size: int = Field(default=32, ge=1, description="calibration batch size")
    bias_correction: bool = Field(
        default=False,
        description="subtract the mean error int8 weights cause (from data.calibration) from "
        "each Conv / Gemm bias",
    )
    equalize: bool = Field(
        default=False,
        description="cross-layer equalization of Conv -> ReLU -> Conv chains first (as the "
        "equalize pass, relu6: skip)",
    )
    smooth_alpha: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="SmoothQuant LayerNorm -> MatMul first, with this alpha (as the smooth pass)",
    )
    float_outputs: list[str] = Field(
        default_factory=list,
        description="op types whose outputs stay float (inputs and weights int8): [MatMul, Gemm] "
        "keeps a transformer's residual stream out of int8",
    )
    attention_masks: bool = attention_masks_field()


@register("quantize.static")
class StaticQuantization(Int8Pass[StaticParams, StaticPlan]):
    """int8 weights and activations (QDQ), scales calibrated on data.calibration.

    Holding accuracy: attention masks stay finite and in float (attention_masks, on by default);
    bias_correction, equalize (CLE) and smooth_alpha (SmoothQuant) rewrite the float model for
    int8 first; calibration: auto picks the method; float_outputs keeps e.g. MatMul outputs
    float. Activation ranges are computed once per pass and reused by the fallback.

    Sample YAML:
        - type: quantize.static
          per_channel: true
          calibration: minmax
          calibration_samples: 128
    """

    Params = StaticParams

    def check(self, config: LoadedConfig) -> None:
        super().check(config)
        self.require_data(config, "calibration", f"{self.key}: {self.name} needs data.calibration")

    def settle(self, prepared: Path, excluded: list[str], ctx: PassContext) -> StaticPlan:
        """Bias-correction statistics and the activation ranges, once for every quantization."""

        def trial(model: Path, ranges: Path, method: str, path: Path, keep_float) -> None:
            self._quantize(model, path, excluded + keep_float, ranges, method)

        return recovery.plan_static(prepared, excluded, self.params, ctx, trial)

    def quantize(self, plan: StaticPlan, target: Path, excluded: list[str]) -> None:
        model = plan.model_for(excluded, self.params, target.with_suffix(".corrected.onnx"))
        self._quantize(model, target, excluded + plan.keep_float, plan.calibrated(), plan.method)

    def _quantize(self, model: Path, target: Path, excluded, ranges: Path, method: str) -> None:
        """quantize_static with activation ranges computed beforehand (its calibration cache)."""
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        from compress.quant.calibration import ort_method

        activation = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
        quantize_static(
            str(model),
            str(target),
            None,
            use_external_data_format=keeps_external_data(model),
            quant_format=QuantFormat.QDQ,
            per_channel=self.params.per_channel,
            op_types_to_quantize=self.params.op_types,
            nodes_to_exclude=excluded,
            reduce_range=self.params.reduce_range,
            activation_type=activation[self.params.activation_type],
            weight_type=QuantType.QInt8,
            calibrate_method=ort_method(method),
            extra_options={
                "ActivationSymmetric": self.params.symmetric_activations,
                "OpTypesToExcludeOutputQuantization": self.params.float_outputs,
            },
            calibration_cache_path=str(ranges),
        )
