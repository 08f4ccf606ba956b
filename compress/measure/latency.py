"""Latency in ONNX Runtime, all stages measured in interleaved rounds so drift hits them alike."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from compress.config import ReportSection
from compress.data import repeat_to
from compress.errors import ConfigError
from compress.measure.runtime import feeds, fixed_batch, open_session

ROUNDS = 5  # each stage's runs are split over this many rounds, alternating with the others


def measure_latency(
    paths: dict[str, Path], samples: list[np.ndarray], settings: ReportSection
) -> dict[str, dict[str, dict[str, float]]]:
    """{stage: {"<batch>": {p50, p90, p99, runs}}} in milliseconds."""
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
        times = _interleaved(sessions, arrays, settings)
        for name, ms in times.items():
            p50, p90, p99 = np.percentile(ms, [50, 90, 99])
            result[name][str(batch)] = {
                "p50": round(float(p50), 4),
                "p90": round(float(p90), 4),
                "p99": round(float(p99), 4),
                "runs": len(ms),
            }
    return result


def _interleaved(sessions: dict, arrays: list[np.ndarray], settings: ReportSection):
    inputs = {name: feeds(s, arrays) for name, s in sessions.items()}
    for name, session in sessions.items():
        for _ in range(settings.warmup_runs):
            session.run(None, inputs[name])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    per_round_runs = max(1, settings.min_runs // ROUNDS)
    per_round_seconds = settings.min_seconds / ROUNDS
    for _ in range(ROUNDS):
        for name, session in sessions.items():
            started = time.perf_counter()
            runs = 0
            while runs < per_round_runs or time.perf_counter() - started < per_round_seconds:
                t0 = time.perf_counter()
                session.run(None, inputs[name])
                times[name].append((time.perf_counter() - t0) * 1000)
                runs += 1
    return times
