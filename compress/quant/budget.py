"""Judge quantized models against an accuracy budget on data.eval, cheaply where it is safe.

A fallback round whose model is clearly over budget need not run all of data.eval: its model
runs a spread subset first (every k-th sample, so sorted data still gives every class), and is
rejected there when the subset's drop exceeds the budget by more than three standard errors of
the per-sample drops. Anything else runs the rest of the samples too, and only a drop measured
on all of data.eval passes. Rejecting on the subset can only make the search keep more nodes in
float than needed, never pass a model that misses the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress.measure.evaluate import Judge, onnx_output
from compress.measure.metrics import LOWER_IS_BETTER, compute_metric

if TYPE_CHECKING:
    from compress.data import Dataset

SUBSET_MIN = 64  # fewer samples say too little about the drop
SUBSET_FRACTION = 4  # the subset is a quarter of data.eval, used from 4 * SUBSET_MIN samples
Z = 3.0


@dataclass
class Verdict:
    drop: float  # on all of data.eval, or on the subset when `full` is False
    metric: float
    full: bool
    met: bool


class BudgetJudge:
    """Scores models on data.eval against the float model's `reference` outputs."""

    def __init__(
        self, reference: np.ndarray, dataset: Dataset, metric: str, budget: float, output: int
    ):
        self.budget, self.metric, self.output = budget, metric, output
        self.judge = Judge(reference, dataset, metric, output)
        self._reference, self._labels = reference, dataset.labels
        self._inputs = list(dataset.inputs.values())
        count = len(dataset)
        self._subset = (
            np.arange(0, count, SUBSET_FRACTION) if count >= SUBSET_FRACTION * SUBSET_MIN else None
        )

    def full(self, path: Path) -> Verdict:
        return self._verdict(onnx_output(path, self._inputs, self.output, self.metric))

    def judge_model(self, path: Path) -> Verdict:
        """The subset first; all of data.eval unless the subset already rejects the model."""
        if self._subset is None:
            return self.full(path)
        subset = self._subset
        outputs = onnx_output(path, [a[subset] for a in self._inputs], self.output, self.metric)
        drop = self._clearly_over(outputs, subset)
        if drop is not None:
            value = self.judge.reference_value - drop
            return Verdict(round(drop, 6), round(value, 6), full=False, met=False)
        rest = np.setdiff1d(np.arange(len(self._inputs[0])), subset)
        everything = np.empty((len(self._inputs[0]), *outputs.shape[1:]), outputs.dtype)
        everything[subset] = outputs
        if len(rest):
            rows = [a[rest] for a in self._inputs]
            everything[rest] = onnx_output(path, rows, self.output, self.metric)
        return self._verdict(everything)

    def _verdict(self, outputs: np.ndarray) -> Verdict:
        value = self.judge.score_outputs(outputs)
        drop = self.judge.drop(value)
        return Verdict(drop, value, full=True, met=drop <= self.budget)

    def _clearly_over(self, outputs: np.ndarray, subset: np.ndarray) -> float | None:
        """The subset's drop when it is over budget beyond noise; None otherwise (or when the
        metric is not a mean over samples, so per-sample drops say nothing about its noise)."""
        if self.metric in LOWER_IS_BETTER:  # a relative increase: not a difference of means
            return None
        drops = self._per_sample_drops(outputs, subset)
        if drops is None or len(drops) < 2:
            return None
        drop = float(drops.mean())
        error = float(drops.std(ddof=1)) / np.sqrt(len(drops))
        return drop if drop - Z * error > self.budget else None

    def _per_sample_drops(self, outputs: np.ndarray, subset: np.ndarray) -> np.ndarray | None:
        labels = self._labels[subset] if self._labels is not None else None
        reference = self._reference[subset]

        def score(values: np.ndarray, rows: slice) -> float:
            row_labels = None if labels is None else labels[rows]
            return compute_metric(self.metric, values[rows], row_labels, reference[rows])

        try:
            drops = np.array(
                [
                    score(reference, slice(i, i + 1)) - score(outputs, slice(i, i + 1))
                    for i in range(len(subset))
                ]
            )
            whole = score(reference, slice(None)) - score(outputs, slice(None))
        except Exception:  # a metric that cannot score one sample: judge on all of data.eval
            return None
        return drops if abs(whole - drops.mean()) <= 1e-6 else None
