"""The quality metric of a stage on data.eval: top1, agreement or cosine (vs the baseline), and
a decoder's perplexity and token_agreement (compress.measure.perplexity).

Every metric is a mean over samples of a per-sample score, and holds at any scale of the outputs
(real CNNs' logits were seen with norms near 1e-9) and in float32 or float64:

- a sample whose output is not finite (NaN, infinity) scores as a failure: wrong for top1 and
  agreement, -1 (the worst cosine) for cosine. It never counts as a match, whatever argmax
  or arithmetic would make of it. The same holds where the *reference* output is not finite:
  nothing can match it, so a broken baseline shows as a lower reference value, not as a match.
- cosine is computed on each row divided by its largest magnitude, in float64, so neither a
  norm of 1e-9 (whose squared norms fall under any fixed epsilon) nor 1e9 (or float32's
  largest values, whose squares overflow) changes it. Zero vectors have no direction: two zero
  rows are the same output and score 1, a zero row against a non-zero one scores 0 (nothing in
  common). Rows that are bitwise equal score exactly 1, so the baseline against itself is 1.0.
"""

from __future__ import annotations

import numpy as np

WORST_COSINE = -1.0
LOWER_IS_BETTER = ("perplexity",)


def compute_metric(
    name: str, outputs: np.ndarray, labels: np.ndarray | None, baseline: np.ndarray
) -> float:
    """`outputs` and `baseline` are the judged model output on the eval set, [samples, ...]
    (a decoder's token summaries for the token metrics)."""
    from compress.measure.perplexity import TOKEN_METRICS, token_metric

    if name in TOKEN_METRICS:
        return token_metric(name, outputs, labels, baseline)
    rows = _rows(outputs)
    if name == "top1":
        if labels is None:  # preflight requires data.eval.labels for top1
            raise ValueError("top1 needs labels")
        # argmax picks a NaN's position: the finite mask keeps such a sample from matching
        return _mean(_finite(rows) & (rows.argmax(1) == labels.reshape(-1)))
    reference = _rows(baseline)
    if name == "agreement":
        both = _finite(rows) & _finite(reference)
        return _mean(both & (rows.argmax(1) == reference.argmax(1)))
    if name == "cosine":
        return _mean(cosine_per_sample(rows, reference))
    raise ValueError(f"unknown metric {name!r}")


def metric_drop(name: str, reference: float, value: float) -> float:
    """How much worse `value` is than `reference`: their difference for a metric that is better
    higher, the relative increase for one better lower (perplexity: 0.03 is 3% higher)."""
    if name in LOWER_IS_BETTER:
        return (value - reference) / reference if reference > 0 else float("inf")
    return reference - value


def cosine_per_sample(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `a` with the same row of `b` (see the module's rules)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    finite = _finite(a) & _finite(b)
    a, b = np.where(finite[:, None], a, 0.0), np.where(finite[:, None], b, 0.0)
    a, b = _unit_scale(a), _unit_scale(b)
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    zero_a, zero_b = norm_a == 0, norm_b == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.sum(a * b, axis=1) / (norm_a * norm_b)
    cosine = np.clip(np.nan_to_num(cosine, nan=0.0), -1.0, 1.0)
    cosine = np.where(zero_a | zero_b, np.where(zero_a & zero_b, 1.0, 0.0), cosine)
    cosine = np.where(np.all(a == b, axis=1), 1.0, cosine)
    return np.where(finite, cosine, WORST_COSINE)


def _rows(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    return values.reshape(len(values), -1)


def _finite(rows: np.ndarray) -> np.ndarray:
    """Per sample: every value of its output is finite (integer outputs always are)."""
    if not np.issubdtype(rows.dtype, np.inexact):
        return np.ones(len(rows), dtype=bool)
    return np.all(np.isfinite(rows), axis=1)


def _unit_scale(rows: np.ndarray) -> np.ndarray:
    """Each row divided by its largest magnitude (zero rows stay zero): cosine is unchanged, and
    the squares neither underflow nor overflow."""
    peak = np.max(np.abs(rows), axis=1, keepdims=True)
    return rows / np.where(peak > 0, peak, 1.0)


def _mean(scores: np.ndarray) -> float:
    return float(np.mean(scores)) if len(scores) else 0.0
