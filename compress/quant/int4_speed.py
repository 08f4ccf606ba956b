"""accuracy_level: auto for quantize.int4: the MatMulNBits kernels timed with int8 activations
(level 4) and without (0) at the shape the report times, the faster kept: a decoder exported with
its key/value cache by its decode steps over the cache (report.generation, or its defaults where
the config has none: compress.measure.speed.generation_timing), any other model at the report's
first batch size.

Neither level is right everywhere (ORT 1.32, AVX-512 VNNI, 55M decoder): level 4 made a batch-1
one-token step 2x faster than level 0 and a batch-8 64-token prefill 30% slower. A tie keeps 4,
ONNX Runtime GenAI's CPU default (ort-genai#1265): the decode steps it speeds up are the shape a
language model spends its time in, and a tie says the timed shape does not care. On a machine
that stays busy, where no paired verdict is given, the p50s decide beyond the speed guard's 3%.
Timing costs a session per level and TIMING_RUNS runs at the first batch size, or a few short
generations (compress.measure.speed's brief decode timing): seconds for a ~100M model, so it is
always affordable next to the quantization itself.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from compress.config import ReportSection
    from compress.passes.context import PassContext

Verdict = Literal["faster", "slower", "tie"]  # level 4 against level 0
TIE_LEVEL = 4
TIMING_RUNS = 10  # a brief timing: the choice needs a clear difference, not a precise one


def level_for(verdict: Verdict) -> int:
    """The level to keep when level 4 was `verdict` against level 0."""
    return {"faster": 4, "slower": 0, "tie": TIE_LEVEL}[verdict]


def unpaired_verdict(level4_ms: float, level0_ms: float) -> Verdict:
    """Level 4 against level 0 by p50 alone, beyond the run-to-run noise of the speed guard."""
    from compress.measure.speed import clearly_faster, clearly_slower

    if clearly_slower(level4_ms, level0_ms):
        return "slower"
    return "faster" if clearly_faster(level4_ms, level0_ms) else "tie"


@dataclass(frozen=True)
class LevelTiming:
    """Levels 4 and 0 timed together: their paired verdict (level 4 against 0), their p50s
    (ms, by "level 4" / "level 0"), what was timed, and what kept the machine busy (None when
    it was quiet enough for the paired verdict)."""

    paired: Verdict
    p50: dict[str, float]
    measured: str
    busy: str | None


def choose_accuracy_level(quantized: Path, ctx: PassContext) -> tuple[int, str]:
    """The accuracy_level `quantized` runs faster at (0 or 4), and the timing it was chosen by;
    `quantized` is left as it was."""
    from compress.measure.decoder_feeds import is_decoder_file
    from compress.measure.speed import generation_timing
    from compress.quant.nbits import relevel

    decoding = generation_timing(ctx.timing, is_decoder_file(quantized), ctx.positions)
    copies = {}
    for level in (0, 4):
        copies[level] = quantized.with_suffix(f".level{level}.onnx")
        shutil.copyfile(quantized, copies[level])
        relevel(copies[level], level)
    try:
        paths = {f"level {level}": path for level, path in copies.items()}
        timed = _decode_steps(paths, decoding, ctx) if decoding else _first_batch(paths, ctx)
    finally:
        for path in copies.values():
            path.unlink(missing_ok=True)
    verdict = timed.paired
    if timed.busy is not None:  # no paired verdict: the p50s still say which is clearly slower
        verdict = unpaired_verdict(timed.p50["level 4"], timed.p50["level 0"])
    chosen = level_for(verdict)
    timing = (
        f"accuracy_level {chosen}: {timed.measured}"
        + (" (a tie keeps 4)" if verdict == "tie" else "")
        + (f"; busy machine ({timed.busy}): chosen by p50" if timed.busy is not None else "")
    )
    ctx.log(f"  {timing}")
    return chosen, timing


def _first_batch(paths: dict[str, Path], ctx: PassContext) -> LevelTiming:
    """The levels at the report's first batch size, a brief timing."""
    from compress.measure.speed import first_batch_timing

    check = first_batch_timing(paths, ctx.timing, ctx.samples, ctx.log, TIMING_RUNS)
    p50 = check.p50
    measured = (
        f"level 4 {p50['level 4']:.2f} ms, level 0 {p50['level 0']:.2f} ms at batch {check.batch}"
    )
    busy = check.timings.machine.describe() if check.busy else None
    return LevelTiming(check.verdict("level 4", "level 0"), p50, measured, busy)


def _decode_steps(paths: dict[str, Path], settings: ReportSection, ctx: PassContext) -> LevelTiming:
    """The levels' decode steps over the cache (the generation `settings`' first batch size, a
    brief timing), paired by round; a busy machine is not timed again (the p50s decide)."""
    from compress.measure.speed import decode_step_timing

    check = decode_step_timing(paths, settings, ctx.log, brief=True, retimes=0)
    speedup = check.timings.decode_speedup("level 0", "level 4")
    measured = (
        f"level 4 decodes {speedup.ratio:.2f}x level 0's speed (95% CI {speedup.low:.2f}-"
        f"{speedup.high:.2f}) at batch {check.batch}"
    )
    busy = check.machine.describe() if check.busy else None
    return LevelTiming(speedup.verdict, check.p50, measured, busy)
