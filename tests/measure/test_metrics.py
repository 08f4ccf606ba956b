"""The judge's metrics hold at any scale of the outputs, count NaN and infinity as failures, and
score the reference exactly against itself."""

from __future__ import annotations

import numpy as np
import pytest

from compress.measure.evaluate import Judge
from compress.measure.metrics import compute_metric, cosine_per_sample

METRICS = ["top1", "agreement", "cosine"]
SCALES = [1e-9, 1.0, 1e9]
DTYPES = [np.float32, np.float64]


def logits(samples=50, classes=10, seed=0):
    """Baseline logits, labels they get right on all but the first 5, and a candidate whose top
    class differs from the baseline's on 10 samples."""
    rng = np.random.default_rng(seed)
    baseline = rng.normal(size=(samples, classes))
    labels = baseline.argmax(1)
    labels[:5] = (labels[:5] + 1) % classes
    candidate = baseline + rng.normal(scale=0.01, size=baseline.shape)
    for i in range(40, 50):  # push another class to the top
        candidate[i, (baseline[i].argmax() + 1) % classes] = baseline[i].max() + 1
    return baseline, labels, candidate


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_metric_is_the_same_at_any_scale_and_precision(metric, scale, dtype):
    baseline, labels, candidate = logits()
    expected = compute_metric(metric, candidate, labels, baseline)
    scaled = compute_metric(
        metric, (candidate * scale).astype(dtype), labels, (baseline * scale).astype(dtype)
    )
    assert scaled == pytest.approx(expected, abs=1e-6)
    # and they are the figures the construction gives, not ~0 for every model
    if metric == "cosine":
        assert 0.8 < expected < 1.0
    else:
        assert expected == pytest.approx({"top1": 35 / 50, "agreement": 40 / 50}[metric])


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_reference_scores_exactly_one_against_itself(scale, dtype):
    baseline, labels, _ = logits()
    outputs = (baseline * scale).astype(dtype)
    judge = Judge(outputs, _Dataset(outputs, labels), "cosine")
    assert judge.reference_value == 1.0 and judge.drop(judge.score_outputs(outputs)) == 0.0
    assert Judge(outputs, _Dataset(outputs, labels), "agreement").reference_value == 1.0
    assert Judge(outputs, _Dataset(outputs, labels), "top1").reference_value == 0.9


def test_a_small_norm_candidate_that_lost_its_signal_shows_its_drop():
    """The bug this guards: with norms near 1e-9 every cosine read ~0, so every drop was 0."""
    baseline, labels, _ = logits()
    baseline *= 1e-9
    noise = np.random.default_rng(1).normal(scale=1e-9, size=baseline.shape)
    judge = Judge(baseline, _Dataset(baseline, labels), "cosine")
    assert judge.drop(judge.score_outputs(noise)) > 0.5


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_sample_that_is_not_finite_is_a_failure_never_a_match(metric, bad):
    baseline, labels, _ = logits()
    labels = baseline.argmax(1)  # every sample right
    outputs = baseline.copy()
    outputs[:10, labels[:10]] = bad  # argmax would land on the right class for NaN and +inf
    outputs[10, 0] = bad
    value = compute_metric(metric, outputs, labels, baseline)
    if metric == "cosine":
        assert value == pytest.approx((39 - 11) / 50)  # 39 exact matches, 11 at the worst (-1)
    else:
        assert value == pytest.approx(39 / 50)


@pytest.mark.parametrize("metric", ["agreement", "cosine"])
def test_a_reference_that_is_not_finite_matches_nothing(metric):
    baseline, labels, _ = logits()
    baseline[0, 0] = np.nan
    value = compute_metric(metric, baseline, labels, baseline)
    assert value < 1.0
    judge = Judge(baseline, _Dataset(baseline, labels), metric)
    assert judge.drop(judge.score_outputs(baseline)) == 0.0  # itself: no drop, whatever it scores


def test_zero_vectors_have_a_defined_cosine():
    zero, ones = np.zeros((1, 4)), np.ones((1, 4))
    assert cosine_per_sample(zero, zero).tolist() == [1.0]  # the same output
    assert cosine_per_sample(zero, ones).tolist() == [0.0]  # nothing in common
    assert cosine_per_sample(ones, -ones).tolist() == [-1.0]


def test_cosine_of_float32_extremes_does_not_overflow():
    big = np.full((2, 8), np.finfo(np.float32).max / 2, np.float32)
    tiny = np.full((2, 8), np.finfo(np.float32).tiny * 4, np.float32)
    assert cosine_per_sample(big, big * 0.5).tolist() == [1.0, 1.0]
    assert cosine_per_sample(tiny, tiny).tolist() == [1.0, 1.0]


class _Dataset:
    """What Judge reads of a dataset: its inputs (unused with reference outputs) and labels."""

    def __init__(self, outputs, labels):
        self.inputs = {"x": outputs}
        self.labels = labels
