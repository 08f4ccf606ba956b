"""ONNX Runtime sessions and batched inference, shared by parity, metrics and latency."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.measure.decoder_feeds import completed_feeds, session_inputs
from compress.measure.fixed_batch import chunks


def open_session(path: Path, threads: int, lean: bool = False):
    """An ONNX Runtime session on the CPU. `lean`, for a check that is not timed (parity):
    no memory arena (it would keep the largest activations seen, a chunk of a decoder's logits,
    for the session's life) and no prepacked copies of the weights (made beside them while
    the session opens); the same arithmetic, held in less memory."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if lean:
        options.enable_cpu_mem_arena = False
        options.add_session_config_entry("session.disable_prepacking", "1")
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def fixed_batch(session) -> int | None:
    """The batch size the model insists on, or None when its batch axis is dynamic."""
    dims = [i.shape[0] for i in session.get_inputs() if i.shape]
    fixed = {d for d in dims if isinstance(d, int)}
    return fixed.pop() if len(fixed) == 1 else None


def feeds(session, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The session's inputs by name, from `arrays` in their order; a decoder's position ids and
    empty cache filled in from its token ids and mask (compress.measure.decoder_feeds)."""
    return completed_feeds(session_inputs(session), arrays)


def run_batched(
    session, inputs: list[np.ndarray], batch_size: int, outputs: list[str] | None = None
) -> list[np.ndarray]:
    """Run all samples through `session` (only `outputs`, by name, when given); a fixed-batch
    model gets its last batch padded."""
    fixed = fixed_batch(session)
    parts = [
        [o[:real] for o in session.run(outputs, feeds(session, part))]
        for part, real in chunks(inputs, batch_size, fixed)
    ]
    return [np.concatenate(outs) for outs in zip(*parts, strict=True)]
