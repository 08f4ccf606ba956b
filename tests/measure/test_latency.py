"""Latency sampling stops when every median has settled, or when the time budget ends."""

from __future__ import annotations

import math

import numpy as np

from compress.config import ReportSection
from compress.measure.latency import ROUNDS, measure_latency, median_is_stable
from tests.helpers.onnx_builders import small_onnx


def test_the_median_interval_narrows_with_more_runs():
    rng = np.random.default_rng(0)
    few = list(1 + 0.2 * rng.random(20))  # +-10% jitter
    many = list(1 + 0.2 * rng.random(20_000))
    assert not median_is_stable(few, 0.01)
    assert median_is_stable(many, 0.01)
    assert median_is_stable([2.0] * 5, 1e-6)


class FakeClock:
    """time.perf_counter for the latency code: each reading `steps` seconds after the last (in
    turn), so every run's duration is fixed by the test, not by the machine's load."""

    def __init__(self, *steps: float) -> None:
        self.now, self.steps, self.readings = 0.0, steps, 0

    def perf_counter(self) -> float:
        self.now += self.steps[self.readings % len(self.steps)]
        self.readings += 1
        return self.now


def test_sampling_stops_once_settled_and_at_the_budget_otherwise(tmp_path, monkeypatch):
    from compress.measure import latency

    paths = {"a": small_onnx(tmp_path / "a.onnx"), "b": small_onnx(tmp_path / "b.onnx")}
    samples = [np.zeros((4, 1, 8, 8), np.float32)]
    easy = ReportSection(batch_sizes=[4], min_runs=50, min_seconds=0, warmup_runs=1,
                         stable_within=0.01)  # fmt: skip
    per_round = math.ceil(50 / ROUNDS)
    monkeypatch.setattr(latency, "time", FakeClock(0.001))  # every run 1 ms: settled at once
    settled = measure_latency(paths, samples, easy)
    assert settled.batches[4].settled
    for stage in settled.by_stage().values():
        assert stage["4"].runs == ROUNDS * per_round >= 50  # the minimum rounds: no more
        assert stage["4"].p50 == 1.0
    spread = [0.001 * (1 + i / 97) for i in range(97)]  # 1 to 2 ms: never within 1e-9
    monkeypatch.setattr(latency, "time", FakeClock(*spread))
    never = easy.model_copy(update={"stable_within": 1e-9, "max_seconds": 1.0})  # fake seconds
    budget = measure_latency(paths, samples, never)
    assert not budget.batches[4].settled
    for stage in budget.by_stage().values():
        assert stage["4"].stable is False
        assert stage["4"].runs > ROUNDS * per_round and stage["4"].runs % per_round == 0


def test_a_batch_size_that_did_not_settle_is_named_in_the_warnings():
    from compress.report import unsettled_latency
    from tests.helpers.report_builders import stage as made_stage

    def stage(stable_at_1):
        made = made_stage("s", 100, {"32": 1.0, "1": 1.0}, None)  # stable at every batch size
        made.latency_ms["1"].stable = stable_at_1
        return made

    assert unsettled_latency([stage(True), stage(True)], [32, 1]) == []
    [warning] = unsettled_latency([stage(True), stage(False)], [32, 1])
    assert warning.startswith("latency at batch 1 had not settled within report.max_seconds")


def test_a_stage_timed_in_an_earlier_run_is_compared_through_the_anchor():
    """Speeds against a carried stage are the ratio of both stages' speeds against the anchor,
    each paired in its own run, and the interval holds both runs' spreads."""
    from compress.measure.interference import MachineLoad
    from compress.measure.latency import (
        BatchTimings,
        Carried,
        LatencyFigures,
        RoundSpread,
        paired_speedup,
    )

    rng = np.random.default_rng(0)
    anchor = list(4.0 * (1 + 0.01 * rng.standard_normal(12)))  # per-round medians, ms
    now = [a / 2 * (1 + 0.01 * e) for a, e in zip(anchor, rng.standard_normal(12), strict=True)]
    figures = LatencyFigures(p50=1.0, p90=1.1, p99=1.2, runs=80, stable=True)
    earlier = Carried(stats=figures, vs_anchor=4.0, spread=RoundSpread(0.02, 8))
    quiet = MachineLoad(
        state="quiet", other_cpu_cores=0.0, preemptions_per_s=0.0, load_1m=None, seconds=1.0
    )
    runs = {"a": anchor, "n": now}
    timings = BatchTimings(8, runs, runs, True, quiet, anchor="a", carried={"c": earlier})
    assert timings.stats("c") == figures  # as it was timed
    assert timings.speedup("a", "c").ratio == 4.0  # against the anchor: as it was paired then
    through = timings.speedup("c", "n")
    direct = timings.speedup("a", "n")
    assert math.isclose(through.ratio, direct.ratio / 4.0)  # n is 2x faster than a, c 4x
    assert through.verdict == "slower" and direct.verdict == "faster"
    width = [math.log(s.high / s.low) for s in (through, direct)]
    assert width[0] > width[1]  # two runs' noise, not one
    assert math.isclose(timings.speedup("n", "c").ratio, 1 / through.ratio)
    assert direct == paired_speedup(anchor, now, direct.ratio)  # both timed now: paired directly
    carried = timings.carry("n")  # what the next run gets of n
    assert math.isclose(carried.vs_anchor, direct.ratio) and carried.spread.rounds == 12
