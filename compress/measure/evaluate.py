"""Judge ONNX models against a reference model on data.eval, with the report's metric.

The pipeline uses it for every stage; quantize passes use it to hold an accuracy budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress.measure.metrics import compute_metric, metric_drop
from compress.measure.perplexity import LOGITS_BYTES, TOKEN_METRICS, summarized
from compress.measure.runtime import open_session, run_batched

if TYPE_CHECKING:
    from compress.data import Dataset

EVAL_BATCH = 256


def onnx_output(
    path: Path, inputs: list[np.ndarray], index: int, metric: str | None = None
) -> np.ndarray:
    """The ONNX model's output `index` (the context's judged_output) on all `inputs`; for a
    token `metric`, its token summaries (compress.measure.perplexity: logits never kept)."""
    session = open_session(path, threads=1)
    if metric in TOKEN_METRICS:
        name = session.get_outputs()[index].name
        return summarized(lambda part: run_batched(session, part, len(part[0]), [name])[0], inputs)
    return run_batched(session, inputs, EVAL_BATCH)[index]


def fitting_samples(
    path: Path, samples: list[np.ndarray], index: int, limit: int | None = None
) -> list[np.ndarray]:
    """The first of `samples` (at least one) whose output `index` of the ONNX model `path`
    takes at most `limit` bytes together (LOGITS_BYTES by default). A comparison of whole
    outputs holds them all, and a decoder's are its logits, [tokens, vocabulary] a sample: 16 MB
    for 128 tokens of 32000 words, so 64 windows would hold 1 GB a copy where a few thousand
    positions settle the comparison."""
    session = open_session(path, threads=1)
    first = run_batched(session, [a[:1] for a in samples], 1)[index]
    rows = max(1, (LOGITS_BYTES if limit is None else limit) // max(first.nbytes, 1))
    return [a[:rows] for a in samples]


class Judge:
    """Scores models with `metric` on their output `output` (the context's judged_output) on
    `dataset`; agreement and cosine compare to the outputs of `reference` (an ONNX file, or the
    judged outputs themselves)."""

    def __init__(
        self, reference: Path | np.ndarray, dataset: Dataset, metric: str, output: int = 0
    ):
        self.dataset, self.metric, self.output = dataset, metric, output
        self._inputs = list(dataset.inputs.values())
        self._reference_outputs = (
            reference
            if isinstance(reference, np.ndarray)
            else onnx_output(reference, self._inputs, output, metric)
        )
        # The reference scored as any model is: 1.0 for agreement and cosine (its rows are
        # bitwise its own), its own top1; so a model with the reference's outputs drops exactly 0.
        self.reference_value = self.score_outputs(self._reference_outputs)

    @property
    def inputs(self) -> list[np.ndarray]:
        return self._inputs

    def score_outputs(self, outputs: np.ndarray) -> float:
        value = compute_metric(self.metric, outputs, self.dataset.labels, self._reference_outputs)
        return round(value, 6)

    def score(self, path: Path) -> float:
        return self.score_outputs(onnx_output(path, self._inputs, self.output, self.metric))

    def drop(self, value: float) -> float:
        """How much worse `value` is than the reference model's (perplexity: relatively)."""
        return round(metric_drop(self.metric, self.reference_value, value), 6)
