"""Speed checks between models timed together: the timing quantize.auto chooses by, and the
speed guard's (compress.job.speed_guard: `on_slower: revert` undoes a pass that slows the model).

Two shapes are timed: a whole batch at the report's first batch size (`first_batch_timing`,
`BatchCheck`), and a decoder's greedy decode steps over its key/value cache at
report.generation's first batch size (`decode_step_timing`, `DecodeCheck`), the shape a language
model spends its time in. Which one a model gets is one rule (`generation_timing`): a graph with
its key/value cache is timed on decode steps, with report.generation or, where the config has
none, its defaults within the model's positions; any other model by the batch.

Models are compared paired (`compress.measure.latency.Speedup`): faster or slower only when the
95% interval of the per-round ratios says so, by more than 3%; anything else is a tie. A
timing taken on a busy machine is taken again (at most `BUSY_RETIMES` times); if the machine
stays busy, nothing is called faster or slower, and the caller says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from compress.config import GenerationSection, ReportSection
from compress.measure.generation import GenerationTimings, measure_generation
from compress.measure.interference import MachineLoad
from compress.measure.latency import SPEED_TOLERANCE, BatchTimings, Speedup, measure_latency

BUSY_RETIMES = 2  # timings taken again while the machine is busy, before deciding anyway
BRIEF_RUNS = 20  # a brief timing at a batch size: enough to tell 1.5x apart, not 3%
BRIEF_ROUNDS = 3  # a brief timing of decode steps: generations per model, interleaved
BRIEF_TOKENS = 16  # ... of at most this many new tokens (a step's cost barely moves with them)

Verdict = Literal["faster", "slower", "tie"]


def _machine_note(machine: MachineLoad, retimed: int) -> str:
    return (
        f"the machine stayed busy through {retimed + 1} timing(s) ({machine.describe()}), so "
        "no model is called faster or slower"
    )


class _TimedTogether:
    """What BatchCheck and DecodeCheck share: their batch, the machine, and verdicts that are a
    tie on a machine that stayed busy."""

    timings: BatchTimings | GenerationTimings
    retimed: int  # how many times it was timed again because the machine was busy

    @property
    def batch(self) -> int:
        return self.timings.batch

    @property
    def machine(self) -> MachineLoad:
        return self.timings.machine

    @property
    def busy(self) -> bool:
        return self.timings.machine.busy

    def verdict(self, name: str, reference: str) -> Verdict:
        """`name` against `reference`, paired; a tie on a machine that stayed busy."""
        if self.busy:
            return "tie"
        return self.speedup(reference, name).verdict

    def speedup(self, reference: str, name: str) -> Speedup:
        """`name`'s speed over `reference`'s, paired over the timed shape's rounds."""
        raise NotImplementedError

    def machine_note(self) -> str:
        """On a machine that stayed busy: what it was doing, and what was done about it."""
        return _machine_note(self.machine, self.retimed)


@dataclass
class BatchCheck(_TimedTogether):
    """Models timed together at the first report batch size."""

    timings: BatchTimings
    retimed: int

    @property
    def p50(self) -> dict[str, float]:
        return {name: self.timings.stats(name).p50 for name in self.timings.runs}

    @property
    def shape(self) -> str:
        """What a p50 is the time of, as a reason says it ("... ms at batch 8")."""
        return f"at batch {self.batch}"

    def speedup(self, reference: str, name: str) -> Speedup:
        return self.timings.speedup(reference, name)


@dataclass
class DecodeCheck(_TimedTogether):
    """Decoders timed together on greedy decode steps over their key/value cache: p50 is the
    median decode step (ms), verdicts are paired over the rounds' medians."""

    timings: GenerationTimings
    retimed: int
    prompt_tokens: int

    @property
    def p50(self) -> dict[str, float]:
        return {name: float(np.median(ms)) for name, ms in self.timings.decode.items()}

    @property
    def shape(self) -> str:
        prompt = f"a prompt of {self.prompt_tokens} tokens"
        return f"per decode step at batch {self.batch} after {prompt}"

    def speedup(self, reference: str, name: str) -> Speedup:
        return self.timings.decode_speedup(reference, name)


SpeedCheck = BatchCheck | DecodeCheck
# (models by name, brief) -> those models timed together; brief: a short screening timing
Timer = Callable[[dict[str, Path], bool], SpeedCheck]


def first_batch_timing(
    paths: dict[str, Path],
    settings: ReportSection,
    samples: Callable[[int], list[np.ndarray]],
    log: Callable[[str], None],
    min_runs: int | None = None,
    retimes: int = BUSY_RETIMES,
) -> BatchCheck:
    """The models timed interleaved at the first batch size of the report `settings` on
    `samples(batch)`, again while the machine is busy (at most `retimes` times, each said in
    `log`); with `min_runs`, a brief timing of that many runs each."""
    batch = settings.batch_sizes[0]
    update: dict[str, Any] = {"batch_sizes": [batch]}
    if min_runs is not None:
        update |= {"min_runs": min_runs, "min_seconds": 0.0, "max_seconds": 0.0}
    one_batch = settings.model_copy(update=update)
    inputs = samples(batch)
    timings = measure_latency(paths, inputs, one_batch).batches[batch]
    retimed = 0
    while timings.machine.busy and retimed < retimes:
        retimed += 1
        log(f"  busy machine ({timings.machine.describe()}): timing again")
        timings = measure_latency(paths, inputs, one_batch).batches[batch]
    return BatchCheck(timings, retimed)


def decode_step_timing(
    paths: dict[str, Path],
    settings: ReportSection,
    log: Callable[[str], None],
    brief: bool = False,
    retimes: int = BUSY_RETIMES,
) -> DecodeCheck:
    """Decoders timed on report.generation's greedy loop at its first batch size, in
    interleaved rounds (no peak memory), again while the machine is busy (at most `retimes`
    times, as `first_batch_timing`); `brief`: BRIEF_ROUNDS generations of at most BRIEF_TOKENS
    new tokens each, however unsettled."""
    wanted = settings.generation
    if wanted is None:
        raise ValueError("decode steps are timed as report.generation says: it is not set")
    generation: dict[str, Any] = {"batch_sizes": wanted.batch_sizes[:1], "peak_memory": False}
    report: dict[str, Any] = {}
    if brief:
        generation["min_rounds"] = BRIEF_ROUNDS
        generation["new_tokens"] = min(wanted.new_tokens, BRIEF_TOKENS)
        report["max_seconds"] = 0.0
    report["generation"] = wanted.model_copy(update=generation)
    one_batch = settings.model_copy(update=report)

    def timed() -> GenerationTimings:
        return next(iter(measure_generation(paths, one_batch).batches.values()))

    timings, retimed = timed(), 0
    while timings.machine.busy and retimed < retimes:
        retimed += 1
        log(f"  busy machine ({timings.machine.describe()}): timing again")
        timings = timed()
    return DecodeCheck(timings, retimed, wanted.prompt_tokens)


def generation_timing(
    settings: ReportSection, decoder: bool, positions: int | None = None
) -> ReportSection | None:
    """The report settings a model's decode steps are timed with, or None where the model is
    timed by the batch. A decoder exported with its key/value cache (`decoder`) is used by
    generating, so it is timed so: with report.generation, or where the config has none its
    defaults within the model's `positions` (None: not known, as of an ONNX file).
    compress bench, the speed guard, quantize.auto and quantize.int4's accuracy_level: auto
    all ask this."""
    if not decoder:
        return None
    if settings.generation is not None:
        return settings
    return settings.model_copy(update={"generation": GenerationSection.within(positions)})


def model_timer(
    settings: ReportSection,
    decoder: bool,
    samples: Callable[[int], list[np.ndarray]],
    log: Callable[[str], None],
    positions: int | None = None,
) -> Timer:
    """How models are timed against each other: a decoder graph's decode steps (with the
    settings `generation_timing` gives), else the first batch size. A brief timing is not
    taken again on a busy machine: it only orders models timed interleaved, which load slows
    alike; the full timing that verdicts rest on is."""
    decoding = generation_timing(settings, decoder, positions)
    if decoding is not None:
        return lambda paths, brief: decode_step_timing(
            paths, decoding, log, brief, 0 if brief else BUSY_RETIMES
        )
    return lambda paths, brief: first_batch_timing(
        paths,
        settings,
        samples,
        log,
        BRIEF_RUNS if brief else None,
        0 if brief else BUSY_RETIMES,
    )


def clearly_faster(ms: float, input_ms: float) -> bool:
    """Faster than the input beyond run-to-run noise (3%), for p50s of separate timings, which
    cannot be paired (quantize.auto's screening)."""
    return ms * SPEED_TOLERANCE <= input_ms


def clearly_slower(ms: float, input_ms: float) -> bool:
    """Slower than the input beyond run-to-run noise (3%), for p50s of separate timings."""
    return ms > input_ms * SPEED_TOLERANCE
