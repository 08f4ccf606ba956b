"""Latency sampling stops when every median has settled, or when the time budget ends."""

from __future__ import annotations

import math

import numpy as np

from compress.config import ReportSection
from compress.measure.latency import ROUNDS, measure_latency, median_is_stable
from tests.conftest import small_onnx


def test_the_median_interval_narrows_with_more_runs():
    rng = np.random.default_rng(0)
    few = list(1 + 0.2 * rng.random(20))  # +-10% jitter
    many = list(1 + 0.2 * rng.random(20_000))
    assert not median_is_stable(few, 0.01)
    assert median_is_stable(many, 0.01)
    assert median_is_stable([2.0] * 5, 1e-6)


def test_sampling_stops_once_settled_and_at_the_budget_otherwise(tmp_path):
    paths = {"a": small_onnx(tmp_path / "a.onnx"), "b": small_onnx(tmp_path / "b.onnx")}
    samples = [np.zeros((4, 1, 8, 8), np.float32)]
    easy = ReportSection(batch_sizes=[4], min_runs=50, min_seconds=0, warmup_runs=1,
                         stable_within=0.9)  # fmt: skip
    per_round = math.ceil(50 / ROUNDS)
    settled = measure_latency(paths, samples, easy)
    assert settled.batches[4].settled
    for stage in settled.by_stage().values():
        assert stage["4"]["runs"] == ROUNDS * per_round >= 50  # the minimum rounds: no more
    never = easy.model_copy(update={"stable_within": 1e-9, "max_seconds": 0.2})
    budget = measure_latency(paths, samples, never)
    assert not budget.batches[4].settled
    for stage in budget.by_stage().values():
        assert stage["4"]["stable"] is False
        assert stage["4"]["runs"] > ROUNDS * per_round and stage["4"]["runs"] % per_round == 0


def test_a_batch_size_that_did_not_settle_is_named_in_the_warnings():
    from compress.report import unsettled_latency

    def stage(stable_at_1):
        return {"latency_ms": {"32": {"stable": True}, "1": {"stable": stable_at_1}}}

    assert unsettled_latency([stage(True), stage(True)], [32, 1]) == []
    [warning] = unsettled_latency([stage(True), stage(False)], [32, 1])
    assert warning.startswith("latency at batch 1 had not settled within report.max_seconds")
