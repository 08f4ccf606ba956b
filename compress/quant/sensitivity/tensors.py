"""Run the float and the quantized graph on the same samples with their intermediate tensors
exposed, and sum up, tensor by tensor, how far the quantized values are from the float ones.

The graphs are augmented with onnxruntime.quantization.qdq_loss_debug's
`modify_model_output_intermediate_tensors` (every float tensor it can type becomes an output).
Its `collect_activations` keeps every batch of every tensor in memory, which a CNN at 224x224
cannot afford (gigabytes for 64 samples), so the batches are compared as they come and only
sums are kept.

Where it can, the quantized graph runs isolated (compress.quant.sensitivity.isolate): each quantized
node fed the float model's values, so a tensor's error is the error its producer adds. Where it
cannot, the two graphs run apart and a tensor's error includes everything before it.

A float tensor is compared with its twin in the quantized graph (compress.quant.sensitivity.twins).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compress.measure.fixed_batch import chunks
from compress.measure.runtime import feeds, fixed_batch
from compress.quant.sensitivity.twins import Twin

SAVED_SUFFIX = "_ReshapedSavedOutput"  # what qdq_loss_debug appends to an exposed tensor
BATCH_BYTES = 256 * 2**20  # the exposed tensors of one batch stay under this
MAX_BATCH = 32
RUINED = 1e4  # noise-to-signal ratio of a tensor whose infinities or NaNs differ (-40 dB)


@dataclass
class TensorError:
    """Sums over every value of one tensor on every sample: float signal and quantization noise."""

    signal: float = 0.0  # sum of squares of the float values (where both are finite)
    noise: float = 0.0  # sum of squares of (quantized - float) there
    values: int = 0
    broken: int = 0  # values finite in one graph and not in the other (or different infinities)
    mismatched: bool = False  # the two graphs disagree on the tensor's size: not comparable

    def add(self, reference: np.ndarray, quantized: np.ndarray) -> None:
        if reference.shape != quantized.shape:
            self.mismatched = True
            return
        # float32 dot products (BLAS): the float64, masked path below took two thirds of the
        # time on EfficientNet; it is needed only when a sum is not finite
        reference32 = reference.astype(np.float32, copy=False).reshape(-1)
        with np.errstate(all="ignore"):  # infinities and overflows go to the exact path
            difference = quantized.astype(np.float32, copy=False).reshape(-1) - reference32
            signal = float(np.dot(reference32, reference32))
            noise = float(np.dot(difference, difference))
        if math.isfinite(signal) and math.isfinite(noise):
            self.signal, self.noise = self.signal + signal, self.noise + noise
            self.values += int(reference32.size)
            return
        self._add_exactly(reference, quantized)

    def _add_exactly(self, reference: np.ndarray, quantized: np.ndarray) -> None:
        """In float64, leaving out (and counting) the values where NaN or infinity differ."""
        reference = reference.astype(np.float64, copy=False)
        quantized = quantized.astype(np.float64, copy=False)
        finite_ref, finite_q = np.isfinite(reference), np.isfinite(quantized)
        both = finite_ref & finite_q
        if not both.all():
            # NaN against NaN and an infinity against the same infinity are agreements
            same = (reference == quantized) | (np.isnan(reference) & np.isnan(quantized))
            self.broken += int(np.count_nonzero(~both & ~same))
            reference, quantized = reference[both], quantized[both]
        difference = quantized - reference
        self.signal += float(np.dot(reference, reference))
        self.noise += float(np.dot(difference, difference))
        self.values += int(reference.size)

    @property
    def usable(self) -> bool:
        """Comparable, and a zero float tensor only when quantization kept it zero: noise on a
        tensor with no signal has no scale to be judged against."""
        if self.mismatched:
            return False
        if self.broken:
            return True
        return self.values > 0 and (self.signal > 0 or self.noise == 0)

    @property
    def noise_ratio(self) -> float:
        """Quantization noise power over signal power (1 / SQNR), RUINED at most."""
        if self.broken:
            return RUINED
        if self.noise == 0:
            return 0.0
        return min(self.noise / self.signal, RUINED)


@dataclass
class Comparison:
    errors: dict[str, TensorError]  # by float tensor name
    isolated: bool  # each error is its producer's own (else: accumulated along the graph)
    combined: Path | None = None  # the isolated model's file (the caller removes it)
    twins: dict[str, Twin] = field(default_factory=dict)  # float tensor -> its quantized twin


def compare_tensors(
    float_path: Path, quant_path: Path, samples: list[np.ndarray], workdir: Path
) -> Comparison:
    """The error of every float tensor both graphs expose, on `samples` (arrays in input order):
    isolated where the graphs combine, else along the quantized graph."""
    import onnx

    from compress.models.onnx_files import save_onnx
    from compress.quant.sensitivity.isolate import PREFIX, isolated_model
    from compress.quant.sensitivity.twins import quantized_twins

    float_model, quant_model = onnx.load(str(float_path)), onnx.load(str(quant_path))
    twins = quantized_twins(quant_model.graph)
    combined = isolated_model(float_model, quant_model)
    typed = None if combined is not None else typed_contrib_outputs(quant_model)
    del float_model, quant_model
    if typed is not None:  # the quantized graph, with its contrib ops' outputs typed
        quant_path = workdir / "sensitivity-typed.onnx"
        save_onnx(typed, quant_path)
    if combined is not None:
        path = workdir / "sensitivity-combined.onnx"
        save_onnx(typed_contrib_outputs(combined) or combined, path)
        del combined
        session = _augmented_session(path, workdir)
        pairs = _pairs(session, session, twins, PREFIX)
        errors = _accumulate(samples, pairs, _one_run(session, pairs), session)
        return Comparison(errors, True, path, twins)
    float_session = _augmented_session(float_path, workdir)
    quant_session = _augmented_session(quant_path, workdir)
    if typed is not None:
        quant_path.unlink()
    pairs = _pairs(float_session, quant_session, twins, "")
    run = _two_runs(float_session, quant_session, pairs)
    return Comparison(_accumulate(samples, pairs, run, float_session), False)


def typed_contrib_outputs(model):
    """`model` with a type declared for each output of an ONNX Runtime contrib op (MatMulNBits,
    GatherBlockQuantized) that shape inference leaves untyped (`_typed_like`). Untyped, the
    tensors are not exposed (nor anything computed from them), so the nodes could not be
    scored. None when every output was typed already."""
    import onnx
    from onnx import helper

    changed = False
    for _ in range(3):  # a declared output lets inference type the nodes after it
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
        types |= {v.name: v.type.tensor_type.elem_type for v in inferred.graph.input}
        types |= {i.name: i.data_type for i in inferred.graph.initializer}
        added = [
            helper.make_tensor_value_info(output, types[_typed_like(node)], None)
            for node in inferred.graph.node
            if node.domain == "com.microsoft" and node.input and _typed_like(node) in types
            for output in node.output[:1]
            if output and output not in types
        ]
        if not added:
            return inferred if changed else None
        model = inferred
        model.graph.value_info.extend(added)
        changed = True
    return model


def _typed_like(node) -> str:
    """The input whose type a contrib op's output has: GatherBlockQuantized gives its scales'
    type (its data are uint8 codes), MatMulNBits its first input's."""
    if node.op_type == "GatherBlockQuantized" and len(node.input) > 2:
        return node.input[2]
    return node.input[0]


def _augmented_session(path: Path, workdir: Path | None = None):
    """`path` with its float tensors exposed, in a session with graph optimisations off (so
    that every tensor is what the graph says)."""
    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors

    augmented = (workdir or path.parent) / f"{path.stem}.exposed.onnx"
    modify_model_output_intermediate_tensors(str(path), str(augmented))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = min(4, os.cpu_count() or 1)
    options.log_severity_level = 3
    session = ort.InferenceSession(str(augmented), options, providers=["CPUExecutionProvider"])
    augmented.unlink()  # the session holds the graph; the file can be large
    return session


Pair = tuple[str, str, Twin]  # (float output, quantized output, the twin it stands for)


def _pairs(float_session, quant_session, twins: dict[str, Twin], prefix: str) -> list[Pair]:
    """A pair for every exposed float tensor whose twin the quantized side exposes."""
    quant = {o.name for o in quant_session.get_outputs()}
    pairs = []
    for output in float_session.get_outputs():
        tensor = output.name[: -len(SAVED_SUFFIX)]
        if not output.name.endswith(SAVED_SUFFIX) or tensor.startswith(prefix or "\0"):
            continue
        twin = twins.get(tensor, Twin(tensor))
        if prefix + twin.name + SAVED_SUFFIX in quant:
            pairs.append((output.name, prefix + twin.name + SAVED_SUFFIX, twin))
    return pairs


Runner = Callable[[list[np.ndarray]], tuple[list[np.ndarray], list[np.ndarray]]]


def _one_run(session, pairs: list[Pair]) -> Runner:
    names = [f for f, _, _ in pairs] + [q for _, q, _ in pairs]

    def run(batch):
        values = session.run(names, feeds(session, batch))
        return values[: len(pairs)], values[len(pairs) :]

    return run


def _two_runs(float_session, quant_session, pairs: list[Pair]) -> Runner:
    float_names, quant_names = [f for f, _, _ in pairs], [q for _, q, _ in pairs]

    def run(batch):
        return (
            float_session.run(float_names, feeds(float_session, batch)),
            quant_session.run(quant_names, feeds(quant_session, batch)),
        )

    return run


def _accumulate(samples, pairs, run: Runner, session) -> dict[str, TensorError]:
    errors = {f[: -len(SAVED_SUFFIX)]: TensorError() for f, _, _ in pairs}
    twins = [twin for _, _, twin in pairs]
    for batch in _batches(samples, run, fixed_batch(session)):
        for name, twin, ref, quant in zip(errors, twins, *run(batch), strict=True):
            if np.issubdtype(ref.dtype, np.floating):
                errors[name].add(ref, twin.clamp(quant))
    return errors


def _batches(samples: list[np.ndarray], run: Runner, fixed: int | None) -> Iterator[list]:
    """Batches whose exposed tensors fit BATCH_BYTES, sized from one sample's; a model with a
    fixed batch gets batches of that size, the last one filled up with repeated samples."""
    size = fixed
    if not size:
        per_sample = sum(a.nbytes for side in run([a[:1] for a in samples]) for a in side)
        size = int(max(1, min(MAX_BATCH, BATCH_BYTES // max(per_sample, 1))))
    for part, _ in chunks(samples, size, fixed):
        yield part
