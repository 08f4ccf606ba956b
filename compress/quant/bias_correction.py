"""Bias correction: remove the mean error that int8 weights leave in each output channel.

Rounding a layer's weights to int8 (W_q = W + dW) shifts its outputs by dW x; for most layers
that error averages out, but for a small kernel (a 3x3 depthwise convolution has 9 weights per
channel) its mean E[dW x] is not zero, and the shift adds up from layer to layer. With
calibration data the shift is known before quantizing (Nagel et al. 2019, "empirical" bias
correction, as in AIMET): E[dW x] is computed from the float model's inputs to the layer and
subtracted from the layer's bias, so the quantized layer is right on average.

For a convolution E[dW x] needs more than the channel means: with zero padding the border
positions see zeros, so each kernel tap gets the mean of the input values it actually reads
("tap means", computed once per input tensor). dW is computed the way ONNX Runtime quantizes
weights: symmetric int8 (+-127, +-64 with reduce_range), per output channel or per tensor.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx

from compress.quant.activations import ChannelMean, collect, mean
from compress.quant.graph_edit import Graph, attribute
from compress.records import Record


class BiasCorrected(Record):
    """What bias correction changed: how many layers, and the largest shift of a bias."""

    layers: int
    largest_shift: float


class TapMeans:
    """For a Conv's input: the mean over samples and output positions of the value under each
    kernel tap, per input channel ([C, k1, k2, ...]), with the Conv's padding and strides."""

    def __init__(self, conv: onnx.NodeProto, kernel: tuple[int, ...]):
        dims = len(kernel)
        self.kernel = kernel
        self.strides = attribute(conv, "strides", [1] * dims)
        self.dilations = attribute(conv, "dilations", [1] * dims)
        self.pads = attribute(conv, "pads", [0] * (2 * dims))
        self.total: np.ndarray | None = None
        self.count = 0

    def update(self, value: np.ndarray) -> None:
        dims = len(self.kernel)
        # Sum over the batch first: the taps' windows are then cut from one [C, H, W] map.
        summed = value.sum(axis=0, dtype=np.float64)
        padding = [(0, 0)] + [(self.pads[i], self.pads[i + dims]) for i in range(dims)]
        padded = np.pad(summed, padding)
        out = [
            (padded.shape[1 + i] - self.dilations[i] * (self.kernel[i] - 1) - 1) // self.strides[i]
            + 1
            for i in range(dims)
        ]
        sums = np.zeros((summed.shape[0], *self.kernel))
        spatial = tuple(range(1, dims + 1))
        for tap in itertools.product(*(range(k) for k in self.kernel)):
            window = tuple(
                slice(t * d, t * d + s * (o - 1) + 1, s)
                for t, d, s, o in zip(tap, self.dilations, self.strides, out, strict=True)
            )
            at: tuple[slice | int, ...] = (slice(None), *tap)
            sums[at] = padded[(slice(None), *window)].sum(axis=spatial)
        self.total = sums if self.total is None else self.total + sums
        self.count += value.shape[0] * int(np.prod(out))

    @property
    def value(self) -> np.ndarray:
        return mean(self.total, self.count)


def int8_weight(weight: np.ndarray, axis: int | None, reduce_range: bool) -> np.ndarray:
    """`weight` after ONNX Runtime's symmetric int8 round trip (per channel on `axis`, or per
    tensor when `axis` is None)."""
    qmax = 64 if reduce_range else 127
    w = weight.astype(np.float64)
    if axis is None:
        absmax = np.abs(w).max()
    else:
        others = tuple(i for i in range(w.ndim) if i != axis)
        absmax = np.abs(w).max(axis=others, keepdims=True)
    scale = np.where(absmax > 0, absmax / qmax, 1.0)
    return np.clip(np.rint(w / scale), -qmax, qmax) * scale


def correctable(graph: Graph, node: onnx.NodeProto) -> bool:
    """A Conv (2D or 1D) or Gemm whose weight it owns and whose input is not a constant."""
    if node.op_type not in ("Conv", "Gemm") or graph.own_weight(node, 1) is None:
        return False
    if (
        graph.array(node.input[0]) is not None
        or attribute(node, "auto_pad", b"NOTSET") != b"NOTSET"
    ):
        return False  # SAME_* padding: the taps' windows are not worth working out here
    if node.op_type == "Gemm" and attribute(node, "transA", 0):
        return False
    has_bias = len(node.input) > 2 and node.input[2]
    return not has_bias or graph.own_weight(node, 2) is not None


def input_means(
    model: onnx.ModelProto, nodes: list[onnx.NodeProto], samples: list[np.ndarray]
) -> dict[str, np.ndarray]:
    """Tap means of each Conv's input and channel means of each Gemm's, by node name."""
    graph = Graph(model)
    reducers: dict[str, list[TapMeans | ChannelMean]] = {}
    by_node: dict[str, TapMeans | ChannelMean] = {}
    for node in nodes:
        weight = graph.weight(node, 1)  # the nodes were found to have their own weights
        reducer: TapMeans | ChannelMean
        reducer = TapMeans(node, weight.shape[2:]) if node.op_type == "Conv" else ChannelMean(-1)
        reducers.setdefault(node.input[0], []).append(reducer)
        by_node[node.name] = reducer
    collect(model, reducers, samples)
    return {name: reducer.value for name, reducer in by_node.items()}


def expected_shift(node: onnx.NodeProto, delta: np.ndarray, means: np.ndarray) -> np.ndarray:
    """E[dW x] per output channel, from the weight error and the input's (tap) means."""
    if node.op_type == "Gemm":
        return delta @ means if attribute(node, "transB", 0) else means @ delta
    groups = attribute(node, "group", 1)
    out, per_group = delta.shape[0], delta.shape[1]
    delta = delta.reshape(groups, out // groups, per_group, -1)
    means = means.reshape(groups, per_group, -1)
    return np.einsum("gock,gck->go", delta, means).reshape(out)


def correct_biases(
    model: onnx.ModelProto,
    names: set[str],
    means: dict[str, np.ndarray],
    per_channel: bool,
    reduce_range: bool,
) -> BiasCorrected:
    """Subtract E[dW x] from the bias of every node in `names` (a zero bias is added where there
    is none). Returns how many layers changed and the largest shift."""
    graph, largest, count = Graph(model), 0.0, 0
    for node in graph.graph.node:
        if node.name not in names or node.name not in means:
            continue
        weight = graph.weight(node, 1)
        axis = _channel_axis(node) if per_channel else None
        shift = expected_shift(
            node, int8_weight(weight, axis, reduce_range) - weight, means[node.name]
        )
        channels = shift.shape[0]
        if len(node.input) < 3 or not node.input[2]:
            del node.input[2:]
            node.input.append(
                graph.add_initializer(f"{node.input[1]}_bias", np.zeros(channels, np.float32))
            )
        bias = graph.weight(node, 2)
        if bias.size != channels:
            continue  # a broadcast Gemm bias; leave it
        graph.set_array(node.input[2], (bias.reshape(-1) - shift).reshape(bias.shape))
        largest = max(largest, float(np.abs(shift).max()))
        count += 1
    return BiasCorrected(layers=count, largest_shift=largest)


def _channel_axis(node: onnx.NodeProto) -> int:
    """The axis ONNX Runtime quantizes a weight on per channel: a Conv's output channels, a
    Gemm's outputs (axis 0 of B when it is transposed, else 1)."""
    if node.op_type == "Gemm":
        return 0 if attribute(node, "transB", 0) else 1
    return 0
