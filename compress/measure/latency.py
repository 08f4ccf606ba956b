"""Latency in ONNX Runtime, all stages measured in interleaved rounds so drift hits them alike.

After warm-up runs, rounds go on until every stage's median is known to within
`report.stable_within` (a distribution-free 95% confidence interval of the median, read off the
sorted timings), or until `report.max_seconds` has passed for that batch size. Every stage gets
the same input arrays, and ONNX Runtime the same fixed thread count (`report.threads`).

Two models timed together are compared paired: each round gives a ratio of their medians, and
the speedup's 95% interval comes from those ratios (`Speedup`), so drift that slows a whole
round cancels out. While a batch size is timed, the machine is watched (`CpuWatch`): a timing
taken while other processes used the CPU is marked busy, and is not called stable.

A stage timed in an earlier run on this machine (a stage reused from the cache) can be carried
into a measurement instead of timed again (`Carried`): its figures as they were, and its speed
against the anchor (the baseline) timed in the same rounds then. The anchor is timed again now,
so a speedup between a carried stage and one timed now goes through the anchor: the ratio of
their two speeds against it, each paired in its own run, with both runs' spreads in its interval.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from compress.config import ReportSection
from compress.data import repeat_to
from compress.errors import ConfigError
from compress.measure.interference import CpuWatch, MachineLoad
from compress.measure.runtime import feeds, fixed_batch, open_session
from compress.records import Amount, Count, Record

ROUNDS = 8  # each stage's runs are split over at least this many rounds, alternating
Z_95 = 1.96  # the normal quantile of a two-sided 95% interval
T_95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}
T_95 |= {10: 2.23, 12: 2.18, 15: 2.13, 20: 2.09, 30: 2.04}  # Student's t, by degrees of freedom
SPEED_TOLERANCE = 1.03  # a speed change smaller than 3% is a tie, however sure the interval


class LatencyFigures(Record):
    """One stage at one batch size, in milliseconds (report.json's `latency_ms`)."""

    p50: Amount
    p90: Amount
    p99: Amount
    runs: Count
    stable: bool = Field(description="its median settled, on a machine not found busy")


@dataclass(frozen=True)
class Speedup:
    """How much faster one model ran than a reference timed in the same rounds."""

    ratio: float  # reference p50 / model p50
    low: float  # 95% confidence interval of the ratio, from the per-round ratios (paired)
    high: float
    rounds: int

    @property
    def verdict(self) -> Literal["faster", "slower", "tie"]:
        """Faster or slower only when the whole interval says so, and by more than 3%."""
        if self.low > 1 and self.ratio >= SPEED_TOLERANCE:
            return "faster"
        if self.high < 1 and self.ratio * SPEED_TOLERANCE <= 1:
            return "slower"
        return "tie"

    def interval(self) -> list[float]:
        return [round(self.low, 4), round(self.high, 4)]


def paired_speedup(
    reference: list[float], model: list[float], point: float | None = None
) -> Speedup:
    """The speedup of `model` over `reference` from their per-round medians (ms, same rounds):
    the ratio of their overall medians, with a 95% interval as wide as the t interval of the
    per-round log ratios (their spread, so drift that slows a whole round cancels), centred on
    that ratio so the figure and its interval always agree. `point`: the ratio to centre on
    instead (the report's, from the p50s of every run)."""
    point = point if point is not None else float(np.median(reference) / np.median(model))
    spread = RoundSpread.of(reference, model)
    return _interval(point, spread.variance_of_mean(), spread.rounds)


@dataclass(frozen=True)
class RoundSpread:
    """How one model's speed against another varied from round to round: the standard
    deviation of the per-round log ratios of their medians, over `rounds` rounds."""

    log_sd: float
    rounds: int

    @classmethod
    def of(cls, reference: list[float], model: list[float]) -> RoundSpread:
        ratios = np.log(np.asarray(reference) / np.asarray(model))
        n = len(ratios)
        return cls(float(np.std(ratios, ddof=1)) if n >= 2 else 0.0, n)

    def variance_of_mean(self) -> float:
        return self.log_sd**2 / self.rounds if self.rounds else math.inf


def _interval(point: float, variance: float, rounds: int) -> Speedup:
    """`point` with the 95% t interval of a mean log ratio of this variance (df: rounds - 1)."""
    if rounds < 2 or not math.isfinite(variance):
        return Speedup(point, 0.0, math.inf, rounds)
    df = rounds - 1
    t = T_95.get(df) or next((T_95[k] for k in sorted(T_95) if k >= df), Z_95)
    half = t * math.sqrt(variance)
    return Speedup(point, point * math.exp(-half), point * math.exp(half), rounds)


Anchored = tuple[float, "RoundSpread | None"]  # a speed against the anchor, and its spread


def anchored_speedup(reference: Anchored, model: Anchored) -> Speedup:
    """`model`'s speedup over `reference` where each is known by its speed against one anchor
    (anchor p50 / its p50) and that ratio's round spread (None: the anchor itself), timed in
    different runs: the ratio of the two, its interval from both spreads."""
    (before, before_spread), (after, after_spread) = reference, model
    spreads = [s for s in (before_spread, after_spread) if s is not None]
    variance = sum(s.variance_of_mean() for s in spreads)
    return _interval(after / before, variance, min(s.rounds for s in spreads))


def timed_against(
    anchor: str | None, name: str, p50: Callable[[str], float], rounds: dict[str, list[float]]
) -> Anchored:
    """`name`'s speed against `anchor`, both timed in these `rounds` (each round's median, by
    stage): anchor p50 / its p50, and the rounds' spread (None for the anchor itself: 1,
    exactly)."""
    if anchor is None or anchor not in rounds:
        raise ValueError(f"no anchor timed with {name!r} to compare carried stages through")
    if name == anchor:
        return 1.0, None
    return p50(anchor) / p50(name), RoundSpread.of(rounds[anchor], rounds[name])


class Carried(Record):
    """A stage timed at one batch size, as a later run carries it (and the stage cache keeps
    it): its figures (`BatchTimings.stats`), and its speed against the anchor timed in the same
    rounds (anchor p50 / its p50)."""

    stats: LatencyFigures
    vs_anchor: float
    spread: RoundSpread


@dataclass
class BatchTimings:
    """Every stage timed at one batch size, in interleaved rounds."""

    batch: int
    runs: dict[str, list[float]]  # ms of every run, per stage
    rounds: dict[str, list[float]]  # each round's median ms, per stage
    settled: bool  # every median was known within stable_within before max_seconds
    machine: MachineLoad
    anchor: str | None = None  # what carried stages' speeds are against (timed now too)
    carried: dict[str, Carried] = field(default_factory=dict)  # timed in an earlier run

    def stats(self, name: str) -> LatencyFigures:
        """The report's figures for one stage: p50, p90, p99 (ms), runs, and `stable` (its median
        settled, on a machine not found busy)."""
        if name in self.carried:
            return self.carried[name].stats
        p50, p90, p99 = np.percentile(self.runs[name], [50, 90, 99])
        return LatencyFigures(
            p50=round(float(p50), 4),
            p90=round(float(p90), 4),
            p99=round(float(p99), 4),
            runs=len(self.runs[name]),
            stable=self.settled and not self.machine.busy,
        )

    def speedup(self, reference: str, name: str) -> Speedup:
        """`name`'s speedup over `reference`: the ratio of their p50s, the interval paired; where
        one of them was carried from an earlier run, through the anchor (see the module's
        docstring)."""
        if reference in self.rounds and name in self.rounds:
            point = self.stats(reference).p50 / self.stats(name).p50
            return paired_speedup(self.rounds[reference], self.rounds[name], point)
        return anchored_speedup(self.against_anchor(reference), self.against_anchor(name))

    def against_anchor(self, name: str) -> tuple[float, RoundSpread | None]:
        """`name`'s speed against the anchor (anchor p50 / its p50) and the rounds' spread (None
        for the anchor itself: 1, exactly)."""
        if name in self.carried:
            return self.carried[name].vs_anchor, self.carried[name].spread
        return timed_against(self.anchor, name, lambda n: self.stats(n).p50, self.rounds)

    def carry(self, name: str) -> Carried:
        """What a later run needs to carry `name`'s timing at this batch size."""
        ratio, spread = self.against_anchor(name)
        return Carried(
            stats=self.stats(name), vs_anchor=ratio, spread=spread or RoundSpread(0.0, 0)
        )


@dataclass
class Latency:
    """What `measure_latency` measured: each batch size's timings and the machine meanwhile."""

    batches: dict[int, BatchTimings] = field(default_factory=dict)

    def by_stage(self) -> dict[str, dict[str, LatencyFigures]]:
        """{stage: {"<batch>": its figures}}: the report's `latency_ms`."""
        stages: dict[str, dict[str, LatencyFigures]] = {}
        for batch, timings in self.batches.items():
            for name in [*timings.runs, *timings.carried]:
                stages.setdefault(name, {})[str(batch)] = timings.stats(name)
        return stages

    def machine(self) -> dict[str, MachineLoad]:
        """{"<batch>": the machine's load while it was timed}: report.json's `latency.machine`."""
        return {str(b): t.machine.rounded() for b, t in self.batches.items()}

    def busy(self) -> list[BatchTimings]:
        return [t for t in self.batches.values() if t.machine.busy]


def measure_latency(
    paths: dict[str, Path],
    samples: list[np.ndarray],
    settings: ReportSection,
    carried: dict[str, dict[int, Carried]] | None = None,
    anchor: str | None = None,
) -> Latency:
    """Every model timed at each report batch size, interleaved, with the machine watched;
    `carried` stages (timed in an earlier run, by batch size) are not timed again, and speedups
    against them go through `anchor` (one of `paths`)."""
    carried = carried or {}
    sessions = {name: open_session(path, settings.threads) for name, path in paths.items()}
    for name, session in sessions.items():
        fixed = fixed_batch(session)
        if fixed and any(b != fixed for b in settings.batch_sizes):
            raise ConfigError(
                f"report.batch_sizes: stage {name!r} has a fixed batch of {fixed}; "
                f"set report.batch_sizes: [{fixed}]"
            )
    latency = Latency()
    with pinned(settings):
        for batch in settings.batch_sizes:
            arrays = repeat_to(samples, batch)
            with CpuWatch() as watch:
                runs, rounds, settled = _interleaved(sessions, arrays, settings)
            here = {name: by_batch[batch] for name, by_batch in carried.items()}
            timed = BatchTimings(batch, runs, rounds, settled, watch.load, anchor, here)
            latency.batches[batch] = timed
    return latency


def median_is_stable(ms: list[float], within: float) -> bool:
    """True when the 95% confidence interval of the median lies within +-`within` of it. The
    interval runs between the order statistics n/2 -+ 0.98 sqrt(n), whatever the distribution."""
    ordered = np.sort(ms)
    n = len(ordered)
    half_width = Z_95 * math.sqrt(n) / 2
    low = ordered[max(0, math.floor(n / 2 - half_width) - 1)]
    high = ordered[min(n - 1, math.ceil(n / 2 + 1 + half_width) - 1)]
    median = float(np.median(ordered))
    return high - low <= 2 * within * median


def _interleaved(sessions: dict, arrays: list[np.ndarray], settings: ReportSection):
    """Each stage's timings (ms), each round's median per stage, and whether every median
    settled within the time budget."""
    inputs = {name: feeds(s, arrays) for name, s in sessions.items()}
    for name, session in sessions.items():
        for _ in range(settings.warmup_runs):
            session.run(None, inputs[name])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    rounds: dict[str, list[float]] = {name: [] for name in sessions}
    per_round_runs = max(1, math.ceil(settings.min_runs / ROUNDS))
    per_round_seconds = settings.min_seconds / ROUNDS
    sampling_began = time.perf_counter()
    while True:
        for name, session in sessions.items():
            started = time.perf_counter()
            this_round: list[float] = []
            while len(this_round) < per_round_runs or (
                time.perf_counter() - started < per_round_seconds
            ):
                t0 = time.perf_counter()
                session.run(None, inputs[name])
                this_round.append((time.perf_counter() - t0) * 1000)
            times[name] += this_round
            rounds[name].append(float(np.median(this_round)))
        if len(next(iter(rounds.values()))) < ROUNDS:
            continue
        if all(median_is_stable(ms, settings.stable_within) for ms in times.values()):
            return times, rounds, True
        if time.perf_counter() - sampling_began >= settings.max_seconds:
            return times, rounds, False


@contextlib.contextmanager
def pinned(settings: ReportSection):
    """With report.pin_threads, this process (and the ONNX Runtime threads it starts) runs on
    `threads` fixed cores while timing; the cores it may use are restored afterwards."""
    if not settings.pin_threads or not hasattr(os, "sched_setaffinity"):
        yield
        return
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, allowed[: settings.threads])
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def latency_settings(settings: ReportSection, source: str) -> dict[str, Any]:
    """How latency was measured, for the report: a re-measure with these settings matches."""
    return {
        "batch_sizes": settings.batch_sizes,
        "threads": settings.threads,
        "warmup_runs": settings.warmup_runs,
        "min_runs": settings.min_runs,
        "min_seconds": settings.min_seconds,
        "max_seconds": settings.max_seconds,
        "stable_within": settings.stable_within,
        "input": source,
    }
