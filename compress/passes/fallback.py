"""Accuracy-aware fallback: when a quantized model misses its accuracy budget, keep the nodes
whose quantization costs most in float, one group at a time, until the budget is met.

A node's cost is measured, not guessed: the float and the quantized model run the same
calibration samples with every intermediate tensor exposed, and a node costs the relative error
its output has beyond the worst error of its inputs (error it adds, not error it inherits). A
node is kept in float together with the quantized producers of its inputs, because in a QDQ
graph the producer quantizes the tensor too (e.g. the mask Add in front of an attention Softmax).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from compress.context import Context
    from compress.measure.evaluate import Judge

SENSITIVITY_SAMPLES = 64

# quantize(node names kept in float, target path): writes a quantized model
Quantize = Callable[[list[str], Path], None]


def accuracy_budget(own: float | None, ctx: Context) -> float | None:
    """A pass's max_accuracy_drop, else the run's gate."""
    return own if own is not None else ctx.config.config.gates.max_accuracy_drop


def sensitivity_samples(ctx: Context) -> list[np.ndarray]:
    """Calibration samples when there are some (not eval data: that judges the result)."""
    if ctx.calibration is not None:
        return ctx.calibration.take(min(SENSITIVITY_SAMPLES, len(ctx.calibration)))
    return ctx.samples(SENSITIVITY_SAMPLES)


def relative_error(reference: np.ndarray, other: np.ndarray) -> float:
    reference, other = reference.astype(np.float64), other.astype(np.float64)
    return float(np.linalg.norm(other - reference) / max(np.linalg.norm(reference), 1e-12))


def quantize_within_budget(
    quantize: Quantize,
    prepared: Path,
    target: Path,
    judge: Judge,
    budget: float,
    excluded: list[str],
    samples: list[np.ndarray],
    max_steps: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Quantize, then add float nodes step by step while the drop is above `budget`; writes the
    first attempt that meets it (else the one with the smallest drop) to `target`."""
    attempts: list[dict[str, Any]] = []
    paths: list[Path] = []
    float_nodes: list[str] = []
    for step in range(max_steps + 1):
        path = target if step == 0 else target.with_name(f"{target.stem}.fallback{step}.onnx")
        quantize(excluded + float_nodes, path)
        value = judge.score(path)
        attempts.append(
            {"float_nodes": list(float_nodes), "metric": value, "drop": judge.drop(value)}
        )
        paths.append(path)
        log(f"  {len(float_nodes)} node(s) in float: {judge.metric} {value:.4f}")
        if attempts[-1]["drop"] <= budget or step == max_steps:
            break
        group = costliest_group(prepared, path, samples, skip=set(excluded + float_nodes))
        if not group:
            break
        float_nodes += group
    met = [i for i, a in enumerate(attempts) if a["drop"] <= budget]
    best = met[0] if met else min(range(len(attempts)), key=lambda i: attempts[i]["drop"])
    if paths[best] != target:
        shutil.copyfile(paths[best], target)
    return {
        "accuracy_budget": budget,
        "budget_met": bool(met),
        "float_nodes": attempts[best]["float_nodes"],
        "attempts": attempts,
        "verdict": _verdict(bool(met), attempts[best], budget, judge.metric),
    }


def _verdict(met: bool, chosen: dict[str, Any], budget: float, metric: str) -> str:
    count, drop = len(chosen["float_nodes"]), chosen["drop"]
    if met and not count:
        return f"{metric} drop {drop:.4f} is within the budget {budget} with every node quantized"
    if met:
        return f"kept {count} node(s) in float to bring the {metric} drop to {drop:.4f} <= {budget}"
    return (
        f"budget not met: the smallest {metric} drop was {drop:.4f} (limit {budget}) with "
        f"{count} node(s) in float; keeping more nodes in float did not help"
    )


def costliest_group(
    float_path: Path, quant_path: Path, samples: list[np.ndarray], skip: set[str]
) -> list[str]:
    """The quantized node that adds the most error, with the quantized producers of its inputs."""
    import onnx

    float_graph = onnx.load(str(float_path)).graph
    quant_nodes = {n.name: n for n in onnx.load(str(quant_path)).graph.node}

    def quantized(node) -> bool:  # replaced (dynamic) or rewired to dequantized inputs (QDQ)
        twin = quant_nodes.get(node.name)
        return bool(node.name) and (twin is None or list(twin.input) != list(node.input))

    candidates = [n for n in float_graph.node if quantized(n) and n.name not in skip]
    if not candidates:
        return []
    error = tensor_errors(float_path, quant_path, samples)
    costs = [
        (
            max((error.get(o, 0.0) for o in n.output), default=0.0)
            - max((error.get(i, 0.0) for i in n.input), default=0.0),
            n,
        )
        for n in candidates
    ]
    cost, worst = max(costs, key=lambda c: c[0])
    if cost <= 0:
        return []
    producers = {out: n for n in float_graph.node for out in n.output}
    feeding = [producers[i] for i in worst.input if i in producers]
    return [worst.name] + [p.name for p in feeding if quantized(p) and p.name not in skip]


def tensor_errors(
    float_path: Path, quant_path: Path, samples: list[np.ndarray]
) -> dict[str, float]:
    """Relative error of every float tensor the two graphs share, on `samples`."""
    import onnx

    quant_tensors = {o for n in onnx.load(str(quant_path)).graph.node for o in n.output}
    float_tensors = [
        o for n in onnx.load(str(float_path)).graph.node for o in n.output if o in quant_tensors
    ]
    reference = _intermediates(float_path, float_tensors, samples)
    quantized = _intermediates(quant_path, float_tensors, samples)
    return {
        name: relative_error(value, quantized[name])
        for name, value in reference.items()
        if np.issubdtype(value.dtype, np.floating) and value.shape == quantized[name].shape
    }


def _intermediates(path: Path, tensors: list[str], samples: list[np.ndarray]):
    """Run the model with `tensors` exposed as outputs (graph optimisations off, so each
    tensor is what the graph says)."""
    import onnx
    import onnxruntime as ort

    from compress.measure.runtime import feeds

    model = onnx.load(str(path))
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(
        onnx.helper.make_empty_tensor_value_info(t) for t in tensors if t not in present
    )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds(session, samples)), strict=True))
