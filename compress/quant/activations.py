"""Statistics of intermediate tensors of an ONNX model on calibration samples, in one run.

Bias correction needs the mean input each convolution sees, SmoothQuant the largest |value| per
channel of a LayerNorm's output. Both come from running the float model once with those tensors
exposed as outputs, in small batches (a whole calibration set of feature maps does not fit in
memory), each batch folded into a running reducer and dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx

from compress.measure.decoder_feeds import completed_feeds, session_inputs
from compress.measure.fixed_batch import chunks
from compress.measure.runtime import fixed_batch

STATS_BATCH = 8  # samples per run: every exposed feature map of the batch is held at once


class Reducer(Protocol):
    def update(self, value: np.ndarray) -> None: ...


def mean(total: np.ndarray | None, count: int) -> np.ndarray:
    """A running total's mean; an error when no batch was seen."""
    if total is None:
        raise ValueError("no activations were collected (no samples)")
    return total / max(count, 1)


class ChannelAbsMax:
    """Per channel (the last axis, as a MatMul reads it): the largest |value| seen."""

    def __init__(self) -> None:
        self.value: np.ndarray | None = None

    def update(self, value: np.ndarray) -> None:
        current = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
        self.value = current if self.value is None else np.maximum(self.value, current)

    @property
    def largest(self) -> np.ndarray:
        """The largest |value| per channel; an error when no batch was seen."""
        if self.value is None:
            raise ValueError("no activations were collected (no samples)")
        return self.value


class ChannelMean:
    """Per channel on `axis` (1 for NCHW feature maps, -1 for MatMul / Gemm inputs): the mean."""

    def __init__(self, axis: int):
        self.axis, self.count = axis, 0
        self.total: np.ndarray | None = None

    def update(self, value: np.ndarray) -> None:
        moved = np.moveaxis(value.astype(np.float64), self.axis, -1)
        flat = moved.reshape(-1, moved.shape[-1])
        self.total = flat.sum(axis=0) if self.total is None else self.total + flat.sum(axis=0)
        self.count += flat.shape[0]

    @property
    def value(self) -> np.ndarray:
        return mean(self.total, self.count)


def collect(
    model: onnx.ModelProto | Path,
    reducers: Mapping[str, Sequence[Reducer]],
    samples: list[np.ndarray],
    batch_size: int = STATS_BATCH,
) -> None:
    """Run `model` on `samples` with every tensor named in `reducers` exposed; each batch's value
    of a tensor goes to its reducers."""
    import onnxruntime as ort

    if not reducers:
        return
    model = onnx.load(str(model)) if isinstance(model, Path) else model
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    exposed.graph.output.extend(
        onnx.helper.make_empty_tensor_value_info(t) for t in reducers if t not in present
    )
    options = ort.SessionOptions()
    # Optimisations could fuse a tensor away; the statistics must be of the graph as written.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(
        exposed.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    declared = session_inputs(session)
    names = list(reducers)
    fixed = fixed_batch(session)  # padded with copies of a real sample: its maxima stay put
    for part, _ in chunks(samples, batch_size, fixed):
        feed = completed_feeds(declared, part)
        for name, value in zip(names, session.run(names, feed), strict=True):
            for reducer in reducers[name]:
                reducer.update(value)
