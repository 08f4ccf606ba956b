"""What the int8 passes do around ONNX Runtime's quantizer to hold accuracy.

Before pre-processing (`rewrite_source`), on a copy of the pass's input, so that the float
reference the accuracy-aware fallback compares against is the graph that gets quantized:
attention-mask constants clamped (both int8 passes), cross-layer equalization and SmoothQuant
(quantize.static, when asked). These leave the float outputs unchanged within float error.

After pre-processing, a pass settles its `Int8Plan` once: the attention-mask nodes and the
SmoothQuant Muls to keep in float; for quantize.static (`StaticPlan`) also bias correction's
input statistics and the activation ranges (one calibration run, `calibration: auto` choosing
the method). Every quantization of the pass, the fallback's re-quantizations included, is handed
the plan: the pass itself keeps nothing between calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from compress.errors import PassError
from compress.models.decoder_graph import cache_nodes
from compress.passes.context import required
from compress.quant import bias_correction, calibration, masks
from compress.quant.bias_correction import BiasCorrected
from compress.quant.equalize import Equalized, equalize
from compress.quant.graph_edit import Graph, load, save
from compress.quant.masks import ClampedConstant
from compress.quant.sensitivity.cache import AnalysisCache
from compress.quant.smooth import Smoothed, smooth, smoothed_nodes, stats_samples
from compress.records import Record

if TYPE_CHECKING:
    from compress.passes.context import PassContext

BIAS_STATS_SAMPLES = 64  # the mean input of a layer settles long before this


class MaskClamps(Record):
    clamped_constants: list[ClampedConstant]


class CalibrationChoice(Record):
    """The activation-range method `calibration: auto` kept, and why."""

    method: str
    why: str | None = None
    output_error: dict[str, float] | None = Field(
        default=None, description="by method, on held-out calibration samples"
    )
    fit_samples: int | None = None
    held_out_samples: int | None = None


class Recovery(Record):
    """What an int8 pass did around the quantizer to hold accuracy, by technique."""

    attention_masks: MaskClamps | None = None
    mask_float_nodes: list[str] = []
    cache_float_nodes: list[str] = Field(
        default_factory=list,
        description="a decoder's nodes that read or write its key/value cache, kept in float: "
        "a decode step reads the cache back, and its calibration (a prefill) sees it empty",
    )
    equalize: Equalized | None = None
    smooth: Smoothed | None = None
    bias_correction: BiasCorrected | None = None
    calibration: CalibrationChoice | None = None

    def merged(self, later: Recovery) -> Recovery:
        """These techniques and `later`'s (what a later step set wins)."""
        return self.model_copy(
            update={name: getattr(later, name) for name in later.model_fields_set}
        )

    def recovery_notes(self) -> list[str]:
        """One line per technique that changed something, for the report's stage notes."""
        lines = []
        if self.attention_masks is not None or self.mask_float_nodes:
            clamped = self.attention_masks.clamped_constants if self.attention_masks else []
            lines.append(
                f"attention masks: {len(clamped)} constant(s) clamped to {masks.MASK_VALUE:g}, "
                f"{len(self.mask_float_nodes)} node(s) on the mask path kept in float"
            )
        if self.cache_float_nodes:
            lines.append(
                f"key/value cache: {len(self.cache_float_nodes)} node(s) that read or write it "
                "kept in float"
            )
        if self.equalize is not None:
            lines.append(
                f"equalized {self.equalize.pairs} conv pair(s): channel range spread "
                f"{self.equalize.spread_change()}"
            )
        if self.smooth is not None:
            lines.append(
                f"SmoothQuant (alpha {self.smooth.alpha:g}) at {len(self.smooth.sites)} "
                "LayerNorm -> MatMul site(s)"
            )
        if self.bias_correction is not None:
            lines.append(f"bias correction in {self.bias_correction.layers} layer(s)")
        chosen = self.calibration
        if chosen is not None and chosen.output_error:
            errors = ", ".join(f"{m} {e:.4g}" for m, e in chosen.output_error.items())
            lines.append(
                f"calibration {chosen.method} (output error on held-out calibration samples: "
                f"{errors})"
            )
        return lines


def rewrite_source(source: Path, target: Path, params, ctx: PassContext) -> tuple[Path, Recovery]:
    """`source`, or a rewritten copy beside `target`, and what was changed, by technique."""
    model, done = load(source), Recovery()
    if params.attention_masks:
        clamped = masks.clamp_mask_constants(model)
        if clamped:
            done.attention_masks = MaskClamps(clamped_constants=clamped)
            ctx.log(f"  {len(clamped)} attention-mask constant(s) clamped to {masks.MASK_VALUE}")
    if getattr(params, "equalize", False):
        # relu6 "skip": equalizing through Clip(0, 6) would change the float model (on
        # EfficientNet-Lite1 ReLU6 -> ReLU gave cosine 0.51 before any quantization).
        done.equalize = equalize(model, relu6="skip", max_iterations=20)
        ctx.log(f"  equalized {done.equalize.pairs} conv pair(s)")
    if getattr(params, "smooth_alpha", None) is not None:
        done.smooth = smooth(model, stats_samples(ctx), params.smooth_alpha)
        ctx.log(f"  smoothed {len(done.smooth.sites)} LayerNorm -> MatMul site(s)")
    if not done.model_fields_set:
        return source, done
    rewritten = target.with_name(f"{target.stem}.rewritten.onnx")
    save(model, rewritten)
    return rewritten, done


@dataclass
class Int8Plan:
    """What an int8 pass settles once for a pre-processed model (`prepared`), before any
    quantization: the nodes every quantization keeps in float, and what it did to hold accuracy
    (set as it is settled: bias correction once the first model is written)."""

    prepared: Path
    keep_float: list[str]
    recovery: Recovery = field(default_factory=Recovery)


def float_nodes(prepared: Path, params, op_types: list[str] | None = None) -> Int8Plan:
    """The plan's nodes every quantization keeps in float: the attention-mask path (unless
    turned off) and SmoothQuant's Muls; with what the report says about them. `op_types`: what
    the pass quantizes (None: every op type ONNX Runtime can); mask nodes of other types are
    left out."""
    model = load(prepared)
    mask_path = masks.mask_nodes(model) if params.attention_masks else []
    cache = cache_nodes(model.graph)
    if op_types is not None:
        types = {n.name: n.op_type for n in model.graph.node}
        mask_path = [name for name in mask_path if types[name] in op_types]
        cache = [name for name in cache if types[name] in op_types]
    smoothing = smoothed_nodes(model)
    kept = {"mask_float_nodes": mask_path, "cache_float_nodes": cache}
    recovery = Recovery(**{name: nodes for name, nodes in kept.items() if nodes})
    return Int8Plan(prepared, mask_path + cache + smoothing, recovery)


@dataclass
class StaticPlan(Int8Plan):
    """quantize.static's plan: also the calibration method and its activation ranges, and
    bias correction's statistics; `quantize` then only writes models."""

    method: str = "minmax"
    ranges: Path | None = None
    bias_means: dict[str, np.ndarray] = field(default_factory=dict)

    def calibrated(self) -> Path:
        """The activation ranges file, which settling the plan wrote."""
        if self.ranges is None:
            raise PassError(f"{self.prepared.name}: calibration wrote no activation ranges")
        return self.ranges

    def model_for(self, excluded: list[str], params, path: Path) -> Path:
        """The graph to quantize: `prepared` with bias correction on the layers that will be
        quantized (a layer kept in float keeps its bias)."""
        if not self.bias_means:
            return self.prepared
        model = load(self.prepared)
        names = set(self.bias_means) - set(excluded) - set(self.keep_float)
        changed = bias_correction.correct_biases(
            model, names, self.bias_means, params.per_channel, params.reduce_range
        )
        if self.recovery.bias_correction is None:  # as settled, before any fallback
            self.recovery.bias_correction = changed
        save(model, path)
        return path


def calibration_inputs(ctx: PassContext, limit: int | None) -> list[np.ndarray]:
    return [a[:limit] for a in required(ctx.calibration, "calibration").inputs.values()]


def plan_static(
    prepared: Path, excluded: list[str], params, ctx: PassContext, quantize
) -> StaticPlan:
    """Everything quantize.static settles before it quantizes. `quantize(model, ranges, method,
    target, keep_float)` writes one int8 model (used to try calibration methods)."""
    found = float_nodes(prepared, params, params.op_types)
    plan = StaticPlan(prepared, found.keep_float, found.recovery)
    samples = calibration_inputs(ctx, params.calibration_samples)
    if params.bias_correction:
        _settle_bias_correction(plan, params, samples)
    work = ctx.workdir / f"{prepared.stem}.calibration"
    work.mkdir(exist_ok=True)
    model = plan.model_for(excluded, params, work / "corrected.onnx")
    if params.calibration == "auto":
        _choose_calibration(plan, model, params, ctx, samples, work, quantize)
    else:
        plan.method = params.calibration

        def collect() -> Path:
            _finish(
                plan, _collector(model, params, (plan.method,), work), [samples], ctx, params, work
            )
            return plan.calibrated()

        op_types = tuple(params.op_types) if params.op_types is not None else None
        settings = (plan.method, params.percentile, op_types, params.calibration_samples)
        plan.ranges = ctx.shared(AnalysisCache).calibration_ranges(
            model, settings + (params.batch_size,), collect
        )
    return plan


def _settle_bias_correction(plan: StaticPlan, params, samples) -> None:
    """The mean input of every layer bias correction may change, from the float model."""
    model = load(plan.prepared)
    graph = Graph(model)
    layers = [
        n
        for n in model.graph.node
        if bias_correction.correctable(graph, n)
        and (params.op_types is None or n.op_type in params.op_types)
        and n.name not in plan.keep_float
    ]
    stats = [a[:BIAS_STATS_SAMPLES] for a in samples]
    plan.bias_means = bias_correction.input_means(model, layers, stats)


def _collector(model: Path, params, methods, work: Path) -> calibration.RangeCollector:
    return calibration.RangeCollector(model, params.op_types, methods, params.percentile, work)


def _feed(collector, parts: list[list[np.ndarray]], ctx: PassContext, params) -> None:
    for part in parts:
        for feeds in calibration.batches(
            part, ctx.input_names, params.batch_size, collector.fixed_batch
        ):
            collector.update(feeds)


def _finish(plan: StaticPlan, collector, parts, ctx: PassContext, params, work: Path) -> None:
    """Feed the rest of the samples, then write the chosen method's ranges for quantize_static."""
    _feed(collector, parts, ctx, params)
    plan.ranges = calibration.save_ranges(collector.ranges(plan.method), work / "ranges.json")


def _choose_calibration(plan: StaticPlan, model: Path, params, ctx, samples, work, quantize):
    """Fit every method on a subset, keep the one closest to the float model on held-out
    calibration samples, then finish its statistics on all of data.calibration."""
    from compress.measure.evaluate import onnx_output
    from compress.quant.fallback import relative_error

    count = len(samples[0])
    if count < 4:  # nothing to hold out
        plan.recovery.calibration = CalibrationChoice(method="minmax", why="fewer than 4 samples")
        collector = _collector(model, params, ("minmax",), work)
        return _finish(plan, collector, [samples], ctx, params, work)
    fit, held, rest = calibration.split_for_auto(count)
    collector = _collector(model, params, calibration.METHODS, work)
    _feed(collector, [[a[fit] for a in samples]], ctx, params)
    judged = [a[held] for a in samples]
    output = ctx.judged_output
    reference = onnx_output(model, judged, output)
    errors: dict[str, float] = {}
    for method in calibration.METHODS:
        ranges = calibration.save_ranges(collector.ranges(method), work / f"{method}.json")
        trial = work / f"trial-{method}.onnx"
        quantize(model, ranges, method, trial, plan.keep_float)
        trial_output = onnx_output(trial, judged, output)
        errors[method] = round(relative_error(reference, trial_output), 6)
    plan.method = min(errors, key=errors.__getitem__)
    plan.recovery.calibration = CalibrationChoice(
        method=plan.method,
        output_error=errors,
        fit_samples=fit.stop - fit.start,
        held_out_samples=held.stop - held.start,
    )
    ctx.log(
        "  calibration: "
        + ", ".join(f"{m} {e:.4g}" for m, e in errors.items())
        + f" (output error on held-out calibration samples); keeping {plan.method}"
    )
    collector.keep_only(plan.method)
    return _finish(
        plan, collector, [[a[p] for a in samples] for p in (rest, held)], ctx, params, work
    )
