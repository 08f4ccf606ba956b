"""Latency in ONNX Runtime, all stages measured in interleaved rounds so drift hits them alike.

After warm-up runs, rounds go on until every stage's median is known to within
`report.stable_within` (a distribution-free 95% confidence interval of the median, read off the
sorted timings), or until `report.max_seconds` has passed for that batch size. Every stage gets
the same input arrays, and ONNX Runtime the same fixed thread count (`report.threads`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from compress.config import ReportSection
from compress.data import repeat_to
from compress.errors import ConfigError
from compress.measure.runtime import feeds, fixed_batch, open_session

ROUNDS = 5  # each stage's runs are split over this many rounds, alternating with the others
Z_95 = 1.96  # the normal quantile of a two-sided 95% interval


def measure_latency(
    paths: dict[str, Path], samples: list[np.ndarray], settings: ReportSection
) -> dict[str, dict[str, dict[str, float]]]:
    """{stage: {"<batch>": {p50, p90, p99, runs, stable}}} in milliseconds; `stable` says the
    median settled before the time budget ended."""
    sessions = {name: open_session(path, settings.threads) for name, path in paths.items()}
    for name, session in sessions.items():
        fixed = fixed_batch(session)
        if fixed and any(b != fixed for b in settings.batch_sizes):
            raise ConfigError(
                f"report.batch_sizes: stage {name!r} has a fixed batch of {fixed}; "
                f"set report.batch_sizes: [{fixed}]"
            )
    result: dict[str, dict[str, dict[str, float]]] = {name: {} for name in sessions}
    for batch in settings.batch_sizes:
        arrays = repeat_to(samples, batch)
        times, stable = _interleaved(sessions, arrays, settings)
        for name, ms in times.items():
            p50, p90, p99 = np.percentile(ms, [50, 90, 99])
            result[name][str(batch)] = {
                "p50": round(float(p50), 4),
                "p90": round(float(p90), 4),
                "p99": round(float(p99), 4),
                "runs": len(ms),
                "stable": stable,
            }
    return result


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
    """Each stage's timings (ms), and whether every median settled within the time budget."""
    inputs = {name: feeds(s, arrays) for name, s in sessions.items()}
    for name, session in sessions.items():
        for _ in range(settings.warmup_runs):
            session.run(None, inputs[name])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    per_round_runs = max(1, settings.min_runs // ROUNDS)
    per_round_seconds = settings.min_seconds / ROUNDS
    sampling_began, rounds = time.perf_counter(), 0
    while True:
        for name, session in sessions.items():
            started = time.perf_counter()
            runs = 0
            while runs < per_round_runs or time.perf_counter() - started < per_round_seconds:
                t0 = time.perf_counter()
                session.run(None, inputs[name])
                times[name].append((time.perf_counter() - t0) * 1000)
                runs += 1
        rounds += 1
        if rounds < ROUNDS:
            continue
        if all(median_is_stable(ms, settings.stable_within) for ms in times.values()):
            return times, True
        if time.perf_counter() - sampling_began >= settings.max_seconds:
            return times, False


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
