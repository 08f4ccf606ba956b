"""Speed checks between a pass's input and output: the speed guard (`on_slower: revert` undoes
a pass that slows the model) and the timing quantize.auto chooses by.

Models are compared paired (`compress.measure.latency.Speedup`): faster or slower only when the
95% interval of the per-round ratios says so, by more than 3%; anything else is a tie. A timing
taken on a busy machine is taken again (at most `BUSY_RETIMES` times); if the machine stays busy,
nothing is called faster or slower, and the caller says so.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from compress.job.context import Context
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
    paths: dict[str, Path], ctx: Context, min_runs: int | None = None
) -> SpeedCheck:
    """The models timed interleaved at the first report batch size, again while the machine is
    busy (at most BUSY_RETIMES times); with `min_runs`, a brief timing of that many runs each."""
    settings = ctx.config.config.report
    batch = settings.batch_sizes[0]
    update: dict = {"batch_sizes": [batch]}
    if min_runs is not None:
        update |= {"min_runs": min_runs, "min_seconds": 0.0, "max_seconds": 0.0}
    one_batch = settings.model_copy(update=update)
    samples = ctx.samples(batch)
    timings = measure_latency(paths, samples, one_batch).batches[batch]
    retimed = 0
    while timings.machine.busy and retimed < BUSY_RETIMES:
        retimed += 1
        ctx.log(f"  busy machine ({timings.machine.describe()}): timing again")
        timings = measure_latency(paths, samples, one_batch).batches[batch]
    return SpeedCheck(timings, retimed)


def first_batch_p50(
    paths: dict[str, Path], ctx: Context, min_runs: int | None = None
) -> tuple[int, dict[str, float]]:
    """p50 ms of each model at the first report batch size (`first_batch_timing`)."""
    check = first_batch_timing(paths, ctx, min_runs)
    return check.batch, check.p50


def clearly_faster(ms: float, input_ms: float) -> bool:
    """Faster than the input beyond run-to-run noise (3%), for p50s of separate timings, which
    cannot be paired (quantize.auto's screening)."""
    return ms * SPEED_TOLERANCE <= input_ms


def clearly_slower(ms: float, input_ms: float) -> bool:
    """Slower than the input beyond run-to-run noise (3%), for p50s of separate timings."""
    return ms > input_ms * SPEED_TOLERANCE


@dataclass
class Guarded:
    """What the speed guard did: `reverted` the pass, and a `note` for the stage's details."""

    reverted: bool
    note: str = ""


def revert_if_slower(source: Path, target: Path, ctx: Context, pass_name: str) -> Guarded:
    """Time `target` against `source` at the first report batch size; if it is slower (paired
    interval), overwrite `target` with `source`. A machine that stays busy reverts nothing."""
    check = first_batch_timing({"input": source, "output": target}, ctx)
    before, after = check.p50["input"], check.p50["output"]
    timing = f"{after:.3f} ms vs {before:.3f} ms at batch {check.batch}"
    if check.busy:
        note = f"on_slower: revert could not judge ({timing}): {check.machine_note()}"
        ctx.log(f"{pass_name}: {note}; its output is kept")
        return Guarded(False, note)
    paired = check.timings.speedup("input", "output")
    interval = f"{paired.ratio:.2f}x, 95% CI {paired.low:.2f}-{paired.high:.2f}x"
    if paired.verdict != "slower":
        return Guarded(False, f"not slower than its input ({timing}, {interval})")
    ctx.log(
        f"{pass_name} made the model slower ({timing}, {interval}); on_slower: revert keeps "
        "its input"
    )
    shutil.copyfile(source, target)
    return Guarded(True, f"reverted: slower than its input ({timing}, {interval})")
