"""Cross-layer equalization (CLE) of Conv -> activation -> Conv chains in an ONNX graph.

Per-tensor int8 weights lose the channels whose range is far below the layer's largest one;
depthwise convolutions after BatchNorm folding are the usual victims. CLE (Nagel et al. 2019,
as in AIMET) moves scale between two consecutive convolutions: output channel i of the first is
divided by s_i and input channel i of the second multiplied by it, with s_i = sqrt(r1_i / r2_i)
(r1_i: range of the first's output channel, r2_i: range of the second's input channel), so both
end up with the range sqrt(r1_i * r2_i). ReLU and LeakyReLU commute with a positive scale, so the
float model computes the same function. A ReLU6 (Clip 0..6) does not: its bound would have to
become 6 / s_i per channel; see `relu6` below. BatchNormalization after a Conv is folded first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import onnx
from pydantic import Field

from compress.passes.base import OnnxPass, OnnxPassParams, PassDetails, PassInput, PassResult
from compress.passes.registry import register
from compress.quant.graph_edit import Graph, attribute, load, save
from compress.records import Record

if TYPE_CHECKING:
    from compress.passes.context import PassContext

# Activations f with f(x / s) = f(x) / s for s > 0: scaling passes through them unchanged.
HOMOGENEOUS = {"Relu", "LeakyRelu"}
CONVERGED = 1e-3  # stop iterating when no scale moves more than this (log scale)


@dataclass
class Pair:
    first: onnx.NodeProto
    second: onnx.NodeProto
    activation: onnx.NodeProto | None


def fold_batchnorm(model: onnx.ModelProto) -> int:
    """Fold every BatchNormalization that reads a Conv's output alone into that Conv's weight
    and bias (inference form: y = (x - mean) / sqrt(var + eps) * gamma + beta). Returns how many."""
    graph = Graph(model)
    folded: list[onnx.NodeProto] = []
    for bn in [n for n in model.graph.node if n.op_type == "BatchNormalization"]:
        conv = graph.producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or len(bn.output) != 1:
            continue
        reader = graph.only_reader(conv.output[0])
        if reader is None or reader is not bn:
            continue
        weight = graph.own_weight(conv, 1)
        stats = [a for name in bn.input[1:5] if (a := graph.array(name)) is not None]
        if weight is None or len(stats) != 4:
            continue
        gamma, beta, mean, var = (s.astype(np.float64) for s in stats)
        factor = gamma / np.sqrt(var + attribute(bn, "epsilon", 1e-5))
        bias = _bias(graph, conv, weight.shape[0])
        if bias is None:
            continue
        graph.set_array(conv.input[1], weight * factor.reshape(-1, *[1] * (weight.ndim - 1)))
        graph.set_array(conv.input[2], (bias - mean) * factor + beta)
        conv.output[0] = bn.output[0]
        folded.append(bn)
    for node in folded:
        model.graph.node.remove(node)
    return len(folded)


def _bias(graph: Graph, conv: onnx.NodeProto, channels: int) -> np.ndarray | None:
    """The Conv's own bias; a zero one is added when it has none. None if it is shared."""
    if len(conv.input) < 3 or not conv.input[2]:
        name = graph.add_initializer(f"{conv.input[1]}_bias", np.zeros(channels, np.float32))
        del conv.input[2:]
        conv.input.append(name)
    return graph.own_weight(conv, 2)


def conv_pairs(graph: Graph) -> list[Pair]:
    """Conv -> (ReLU | LeakyReLU | Clip from 0 | nothing) -> Conv, each tensor between them read
    by the next node alone, with weights the two convolutions own; plain or depthwise."""
    pairs = []
    for first in (n for n in graph.graph.node if n.op_type == "Conv"):
        node, activation = graph.only_reader(first.output[0]), None
        if node is not None and (node.op_type in HOMOGENEOUS or _clip_from_zero(graph, node)):
            activation, node = node, graph.only_reader(node.output[0])
        if node is None or node.op_type != "Conv" or node is first:
            continue
        if _equalizable(graph, first, node):
            pairs.append(Pair(first, node, activation))
    return pairs


def _clip_from_zero(graph: Graph, node: onnx.NodeProto) -> bool:
    if node.op_type != "Clip" or len(node.input) < 2 or not node.input[1]:
        return False
    low = graph.array(node.input[1])
    return low is not None and low.size == 1 and float(low) == 0.0


def _equalizable(graph: Graph, first: onnx.NodeProto, second: onnx.NodeProto) -> bool:
    w1, w2 = graph.own_weight(first, 1), graph.own_weight(second, 1)
    if w1 is None or w2 is None or w1.ndim != w2.ndim or not _plain_or_depthwise(first, w1):
        return False
    if not _plain_or_depthwise(second, w2):
        return False
    channels = w1.shape[0]
    inputs = w2.shape[0] if _depthwise(second, w2) else w2.shape[1]
    bias_ok = len(first.input) < 3 or not first.input[2] or graph.own_weight(first, 2) is not None
    return inputs == channels and bias_ok


def _depthwise(conv: onnx.NodeProto, weight: np.ndarray) -> bool:
    groups = attribute(conv, "group", 1)
    return groups > 1 and weight.shape[1] == 1 and weight.shape[0] == groups


def _plain_or_depthwise(conv: onnx.NodeProto, weight: np.ndarray) -> bool:
    return attribute(conv, "group", 1) == 1 or _depthwise(conv, weight)


def output_ranges(weight: np.ndarray) -> np.ndarray:
    """Per output channel: the largest |w|."""
    return np.abs(weight).reshape(weight.shape[0], -1).max(axis=1)


def input_ranges(conv: onnx.NodeProto, weight: np.ndarray) -> np.ndarray:
    """Per input channel: the largest |w| over what reads it."""
    if _depthwise(conv, weight):
        return output_ranges(weight)
    return np.abs(weight).swapaxes(0, 1).reshape(weight.shape[1], -1).max(axis=1)


def equalize_pair(graph: Graph, pair: Pair) -> np.ndarray:
    """Scale one pair; returns the scales s (output channel i of `first` divided by s_i)."""
    w1, w2 = graph.weight(pair.first, 1), graph.weight(pair.second, 1)
    r1, r2 = output_ranges(w1), input_ranges(pair.second, w2)
    scales = np.ones_like(r1, dtype=np.float64)
    alive = (r1 > 0) & (r2 > 0)  # a dead channel keeps its scale: nothing to balance
    scales[alive] = np.sqrt(r1[alive] / r2[alive])
    shape = (-1,) + (1,) * (w1.ndim - 1)
    graph.set_array(pair.first.input[1], w1 / scales.reshape(shape))
    if len(pair.first.input) > 2 and pair.first.input[2]:
        graph.set_array(pair.first.input[2], graph.weight(pair.first, 2) / scales)
    axis_shape = shape if _depthwise(pair.second, w2) else (1, -1) + (1,) * (w2.ndim - 2)
    graph.set_array(pair.second.input[1], w2 * scales.reshape(axis_shape))
    return scales


def range_spread(graph: Graph, pairs: list[Pair]) -> float:
    """Median over `pairs` of the worse of two spreads (largest / smallest non-zero range): the
    first convolution's output channels and the second's input channels, the two sets of ranges
    CLE makes equal. A per-tensor int8 scale loses the channels far below the largest."""

    def spread(ranges: np.ndarray) -> float:
        ranges = ranges[ranges > 0]
        return float(ranges.max() / ranges.min()) if ranges.size else 1.0

    worst = [
        max(
            spread(output_ranges(graph.constant(p.first.input[1]))),
            spread(input_ranges(p.second, graph.constant(p.second.input[1]))),
        )
        for p in pairs
    ]
    return float(np.median(worst)) if worst else 1.0


def replace_clips(model: onnx.ModelProto, pairs: list[Pair]) -> int:
    """AIMET's way with ReLU6 before CLE: each Clip(0, b) inside a pair becomes a ReLU. It
    changes the float model only where an activation went past b."""
    count = 0
    for pair in pairs:
        if pair.activation is not None and pair.activation.op_type == "Clip":
            relu = onnx.helper.make_node(
                "Relu",
                [pair.activation.input[0]],
                list(pair.activation.output),
                pair.activation.name or f"relu6_as_relu_{count}",
            )
            pair.activation.CopyFrom(relu)
            count += 1
    return count


class Spread(Record):
    """How far the largest channel's range is from the median channel's, before and after."""

    before: float
    after: float


class Equalized(Record):
    """What cross-layer equalization changed (the equalize pass, quantize.static's equalize);
    the defaults say nothing was."""

    batchnorm_folded: int = 0
    pairs: int = 0
    relu6_pairs: int = 0
    relu6: Literal["skip", "relu"] = "skip"
    clips_replaced_by_relu: int = 0
    iterations: int = 0
    range_spread: Spread | None = None

    def spread_change(self) -> str:
        """The channel range spread, before -> after."""
        spread = self.range_spread
        return "n/a" if spread is None else f"{spread.before:g} -> {spread.after:g}"


def equalize(model: onnx.ModelProto, relu6: str, max_iterations: int) -> Equalized:
    """Fold BatchNorm, then equalize every pair until the scales settle. Returns what changed."""
    folded = fold_batchnorm(model)
    graph = Graph(model)
    pairs = conv_pairs(graph)
    clipped = [p for p in pairs if p.activation is not None and p.activation.op_type == "Clip"]
    replaced = 0
    if relu6 == "skip":
        pairs = [p for p in pairs if p not in clipped]
    else:
        replaced = replace_clips(model, clipped)
    before = range_spread(graph, pairs)
    rounds = 0
    for rounds in range(1, max_iterations + 1):  # noqa: B007 - reported below
        moved = max((np.abs(np.log(equalize_pair(graph, p))).max() for p in pairs), default=0.0)
        if moved < CONVERGED:
            break
    return Equalized(
        batchnorm_folded=folded,
        pairs=len(pairs),
        relu6_pairs=len(clipped),
        relu6=relu6,
        clips_replaced_by_relu=replaced,
        iterations=rounds,
        range_spread=Spread(before=round(before, 3), after=round(range_spread(graph, pairs), 3)),
    )


class EqualizeParams(OnnxPassParams):
    relu6: Literal["skip", "relu"] = Field(
        default="skip",
        description="Clip(0, 6) between two convolutions: skip (the pair is left as it is: the "
        "float model stays the same) or relu (AIMET's way: it becomes a ReLU, then is "
        "equalized; changes the float model wherever an activation went past 6)",
    )
    max_iterations: int = Field(
        default=20, ge=1, le=1000, description="rounds over all pairs until the scales settle"
    )


class EqualizeDetails(Equalized, PassDetails):
    """The equalize pass's details: what it changed, and the line the report shows."""


@register("equalize")
class CrossLayerEqualization(OnnxPass[EqualizeParams]):
    """Cross-layer equalization: balances weight ranges of Conv -> ReLU -> Conv chains for int8.

    Folds BatchNorm into the convolution before it, then rescales each pair of consecutive
    convolutions (depthwise included) so that matching channels share one range; the float
    model computes the same outputs. Put it before quantize.static.

    Sample YAML:
        - type: equalize
          relu6: skip
    """

    Params = EqualizeParams
    Details = EqualizeDetails
    reads = ()

    def apply(self, given: PassInput, ctx: PassContext) -> PassResult:
        source, target = given.files()
        model = load(source)
        done = equalize(model, self.params.relu6, self.params.max_iterations)
        save(model, target)
        line = (
            f"equalized {done.pairs} conv pair(s) in {done.iterations} round(s): "
            f"channel range spread {done.spread_change()}; "
            f"{done.batchnorm_folded} BatchNorm folded, {done.relu6_pairs} ReLU6 "
            f"pair(s) {'made ReLU' if self.params.relu6 == 'relu' else 'skipped'}"
        )
        ctx.log(f"  {line}")
        return PassResult(details=EqualizeDetails(**dict(done), notes=[line]))
