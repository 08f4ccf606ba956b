"""How much each quantized node alone disturbs the model's output.

A node's own error (compress.quant.sensitivity.isolate) says little about what it costs: the same
relative error in the first depthwise convolution of an EfficientNet moved the output several
times more than in a late 1x1 projection (measured: keeping the former in float took the cosine
drop from 0.0085 to 0.0040, while the ranking by own error had put it 28th). So each node's
error, as measured on a few samples, is added to its output tensor in the float model, and the
change of the model's first output is measured: `output_error`, the relative RMS error it
causes there. Independent errors add up in power at the output, which is what the fallback's
guess assumes.

One model serves every node: the float graph with an `Add(tensor, delta)` in front of each
scored tensor's consumers, `delta` a graph input. Several nodes are measured per run by stacking
copies of the samples along the batch, each copy with one node's delta and the others' zero (a
one-element zero broadcasts).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from compress.measure.decoder_feeds import completed_feeds, graph_declared
from compress.measure.runtime import fixed_batch
from compress.quant.sensitivity.isolate import PREFIX
from compress.quant.sensitivity.tensors import RUINED
from compress.quant.sensitivity.twins import Twin

# Forward passes for all nodes together: samples per node = FORWARDS // nodes, within
# [MIN_SAMPLES, MAX_SAMPLES]. On EfficientNet-Lite1 the top 10 were the same nodes with 2, 4 or 8
# samples (an output of 1000 values per sample), and the time grows with the count.
FORWARDS = 384
MIN_SAMPLES, MAX_SAMPLES = 2, 8
STACK = 64  # samples per run: copies of the samples for STACK // samples nodes


def output_impact(
    float_path: Path,
    combined_path: Path,
    twins: dict[str, Twin],
    tensors: list[str],
    samples: list[np.ndarray],
) -> dict[str, float]:
    """Tensor -> the noise-to-signal power ratio of the model's first output when only that
    tensor carries its quantization error (`combined_path`: the isolated model)."""
    import onnx

    float_model = onnx.load(str(float_path))
    output = float_model.graph.output[0].name
    declared = graph_declared(float_model)
    session = _session(onnx.load(str(combined_path)), [output] + _names(tensors, twins))
    fixed = fixed_batch(session)
    wanted = max(MIN_SAMPLES, min(MAX_SAMPLES, FORWARDS // max(len(tensors), 1)))
    count = fixed or min(wanted, len(samples[0]))
    part = [np.concatenate([a[:count]] * -(-count // len(a)))[:count] for a in samples]
    values = session.run(None, completed_feeds(declared, part))
    reference = values[0]
    deltas = {t: twins.get(t, Twin(t)).clamp(q) - f for t, f, q in _triples(tensors, values[1:])}
    impact = {t: _ratio(reference, reference + d) for t, d in deltas.items() if t == output}
    injected = [t for t in deltas if t != output]
    if injected:
        dtypes = {t: deltas[t].dtype for t in injected}
        session = _session(_with_injections(float_model, dtypes), [output])
        runs = _Runs(session, completed_feeds(declared, part), reference, fixed)
        impact |= runs.measure({t: deltas[t] for t in injected})
    return impact


def _names(tensors: list[str], twins: dict[str, Twin]) -> list[str]:
    """Each tensor, then its twin's isolated value in the combined model."""
    return [name for t in tensors for name in (t, PREFIX + twins.get(t, Twin(t)).name)]


def _triples(tensors, values):
    return ((t, values[2 * i], values[2 * i + 1]) for i, t in enumerate(tensors))


def _with_injections(model, tensors: dict[str, np.dtype]):
    """`model` with `tensor + tensor::delta` read wherever `tensor` was read (each Add placed
    after the tensor's producer, so that the nodes stay in graph order)."""
    import onnx

    def inject(tensor: str):
        return onnx.helper.make_node(
            "Add", [tensor, f"{tensor}::delta"], [f"{tensor}::injected"], f"{tensor}::inject"
        )

    nodes = [inject(i.name) for i in model.graph.input if i.name in tensors]
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name in tensors:
                node.input[index] = f"{name}::injected"
        nodes += [node] + [inject(o) for o in node.output if o in tensors]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    for tensor, dtype in tensors.items():
        element = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        model.graph.input.append(
            onnx.helper.make_tensor_value_info(f"{tensor}::delta", element, None)
        )
    return model


class _Runs:
    """Runs of the injected model: `per_run` nodes at a time, each on its own copy of the
    samples (a model with a fixed batch: one node per run)."""

    def __init__(self, session, feeds: dict[str, np.ndarray], reference, fixed: int | None):
        self.session, self.feeds, self.reference = session, feeds, reference
        self.count = len(reference)
        self.per_run = 1 if fixed else max(1, STACK // self.count)

    def measure(self, deltas: dict[str, np.ndarray]) -> dict[str, float]:
        names, impact = list(deltas), {}
        silent = {f"{t}::delta": np.zeros(1, deltas[t].dtype) for t in names}
        for start in range(0, len(names), self.per_run):
            chunk = names[start : start + self.per_run]
            feeds = {k: np.concatenate([a] * len(chunk)) for k, a in self.feeds.items()}
            feeds |= silent | {
                f"{t}::delta": self._stacked(deltas[t], i, len(chunk)) for i, t in enumerate(chunk)
            }
            outputs = self.session.run(None, feeds)[0]
            for slot, tensor in enumerate(chunk):
                part = outputs[slot * self.count : (slot + 1) * self.count]
                impact[tensor] = _ratio(self.reference, part)
        return impact

    def _stacked(self, delta: np.ndarray, slot: int, copies: int) -> np.ndarray:
        stacked = np.zeros((copies * self.count, *delta.shape[1:]), delta.dtype)
        stacked[slot * self.count : (slot + 1) * self.count] = delta
        return stacked


def _ratio(reference: np.ndarray, disturbed: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    difference = disturbed.astype(np.float64) - reference
    if not np.isfinite(difference).all():
        return RUINED
    signal = float(np.sum(reference**2))
    noise = float(np.sum(difference**2))
    if noise == 0:
        return 0.0
    return min(noise / signal, RUINED) if signal > 0 else RUINED


def _session(model, outputs: list[str]):
    """A session of `model` that returns `outputs` (intermediate tensors included)."""
    import onnx
    import onnxruntime as ort

    del model.graph.output[:]
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in outputs)
    options = ort.SessionOptions()
    options.intra_op_num_threads = min(4, os.cpu_count() or 1)
    options.log_severity_level = 3
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
