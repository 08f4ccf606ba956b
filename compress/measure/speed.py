"""Speed checks between models timed together: the timing quantize.auto chooses by, and the
speed guard's (compress.job.speed_guard: `on_slower: revert` undoes a pass that slows the model).

Models are compared paired (`compress.measure.latency.Speedup`): faster or slower only when the
95% interval of the per-round ratios says so, by more than 3%; anything else is a tie. A timing
taken on a busy machine is taken again (at most `BUSY_RETIMES` times); if the machine stays busy,
nothing is called faster or slower, and the caller says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from compress.config import ReportSection
from compress.measure.latency import SPEED_TOLERANCE, BatchTimings, measure_latency

BUSY_RETIMES = 2  # timings taken again while the machine is busy, before deciding anyway


@dataclass
class SpeedCheck:
    """Models timed together at the first report batch size."""

    timings: BatchTimings
    retimed: int  # how many times it was timed again because the machine was busy

    @property
    def batch(self) -> int:
        return self.timings.batch

    @property
    def busy(self) -> bool:
        return self.timings.machine.busy

    @property
    def p50(self) -> dict[str, float]:
        return {name: self.timings.stats(name).p50 for name in self.timings.runs}

    def verdict(self, name: str, reference: str) -> Literal["faster", "slower", "tie"]:
        """`name` against `reference`, paired; a tie on a machine that stayed busy."""
        if self.busy:
            return "tie"
        return self.timings.speedup(reference, name).verdict

    def machine_note(self) -> str:
        """On a machine that stayed busy: what it was doing, and what was done about it."""
        return (
            f"the machine stayed busy through {self.retimed + 1} timing(s) "
            f"({self.timings.machine.describe()}), so no model is called faster or slower"
        )


def first_batch_timing(
    paths: dict[str, Path],
    settings: ReportSection,
    samples: Callable[[int], list[np.ndarray]],
    log: Callable[[str], None],
    min_runs: int | None = None,
) -> SpeedCheck:
    """The models timed interleaved at the first batch size of the report `settings` on
    `samples(batch)`, again while the machine is busy (at most BUSY_RETIMES times, each said in
    `log`); with `min_runs`, a brief timing of that many runs each."""
    batch = settings.batch_sizes[0]
    update: dict[str, Any] = {"batch_sizes": [batch]}
    if min_runs is not None:
        update |= {"min_runs": min_runs, "min_seconds": 0.0, "max_seconds": 0.0}
    one_batch = settings.model_copy(update=update)
    inputs = samples(batch)
    timings = measure_latency(paths, inputs, one_batch).batches[batch]
    retimed = 0
    while timings.machine.busy and retimed < BUSY_RETIMES:
        retimed += 1
        log(f"  busy machine ({timings.machine.describe()}): timing again")
        timings = measure_latency(paths, inputs, one_batch).batches[batch]
    return SpeedCheck(timings, retimed)


def first_batch_p50(
    paths: dict[str, Path],
    settings: ReportSection,
    samples: Callable[[int], list[np.ndarray]],
    log: Callable[[str], None],
    min_runs: int | None = None,
) -> tuple[int, dict[str, float]]:
    """p50 ms of each model at the first report batch size (`first_batch_timing`)."""
    check = first_batch_timing(paths, settings, samples, log, min_runs)
    return check.batch, check.p50


def clearly_faster(ms: float, input_ms: float) -> bool:
    """Faster than the input beyond run-to-run noise (3%), for p50s of separate timings, which
    cannot be paired (quantize.auto's screening)."""
    return ms * SPEED_TOLERANCE <= input_ms


def clearly_slower(ms: float, input_ms: float) -> bool:
    """Slower than the input beyond run-to-run noise (3%), for p50s of separate timings."""
    return ms > input_ms * SPEED_TOLERANCE
