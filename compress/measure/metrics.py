"""The quality metric of a stage on data.eval: top1, agreement or cosine (vs the baseline)."""

from __future__ import annotations

import numpy as np


def compute_metric(
    name: str, outputs: np.ndarray, labels: np.ndarray | None, baseline: np.ndarray
) -> float:
    """`outputs` and `baseline` are the first model output on the eval set, [samples, ...]."""
    if name == "top1":
        return float(np.mean(outputs.reshape(len(outputs), -1).argmax(1) == labels.reshape(-1)))
    if name == "agreement":
        return float(
            np.mean(
                outputs.reshape(len(outputs), -1).argmax(1)
                == baseline.reshape(len(baseline), -1).argmax(1)
            )
        )
    if name == "cosine":
        a = outputs.reshape(len(outputs), -1).astype(np.float64)
        b = baseline.reshape(len(baseline), -1).astype(np.float64)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        return float(np.mean(np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)))
    raise ValueError(f"unknown metric {name!r}")
