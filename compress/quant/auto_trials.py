"""How quantize.auto tries its candidates without paying for every fallback.

Each candidate is first quantized plainly (every node it quantizes in int8, no search, no node
ranking) and judged on data.eval; then all of them are timed together with the input, briefly.
A fully quantized model is as fast as that candidate gets (keeping nodes in float only adds
float work), so the fallback then runs only where it can still pay off, fastest first:
- a candidate within the budget as it is needs none;
- one slower than the input beyond noise is never kept, so it is not searched;
- one slower beyond noise than a candidate already within the budget, or as fast and not
  smaller by 1% or more, cannot win, so it is not searched either;
- one only as fast as a candidate within the budget can win only by size, so its search may keep
  in float only as much weight as leaves it 1% smaller (`max_float_weight_mb`).
Only the models within the budget that are not slower beyond noise than the fastest of them go
on to the final timing (at the report's settings) that the choice is made on.
Every candidate's entry says which of these happened and how long it took.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compress.errors import CompressError, first_line
from compress.quant.auto_records import Candidate, CandidateEntry, FullyQuantized

if TYPE_CHECKING:
    from compress.passes.context import PassContext
    from compress.quant.int8 import QuantizeDetails

SCREEN_RUNS = 20  # the brief first timing: enough to tell 1.5x apart, not 3%
SCREEN_MARGIN = 1.10  # slower than this on the brief timing: not worth the final timing
SIZE_TIE = 1.01  # sizes closer than 1% are a tie (not worth a search, nor a choice)

# run(candidate, max_fallback_steps, target, max_float_weight_mb): the candidate's int8 pass on
# the input -> its details
RunCandidate = Callable[[Candidate, int, Path, "float | None"], "QuantizeDetails"]


@dataclass(frozen=True)
class Plain:
    """A candidate fully quantized: its model and its drop on data.eval."""

    path: Path
    drop: float


@dataclass(frozen=True)
class Finished:
    """A model within the budget: its path and its time on the screening's scale."""

    name: str
    path: Path
    ms: float


@dataclass
class Trial:
    candidate: Candidate
    entry: CandidateEntry  # what the report lists for the candidate, filled as it goes
    plain: Path | None = None  # fully quantized
    plain_drop: float | None = None
    plain_ms: float | None = None  # its brief timing
    final: Path | None = None  # within the budget: `plain` or the fallback's model
    final_ms: float | None = None  # estimated on the screening's time scale
    seconds: float = 0.0
    details: QuantizeDetails | None = None  # the last run of its int8 pass

    @property
    def name(self) -> str:
        return self.candidate.name

    def finish(self, path: Path, ms: float) -> None:
        self.final, self.final_ms = path, ms

    def finished(self) -> Finished | None:
        """Its model within the budget, when it has one."""
        if self.final is None or self.final_ms is None:
            return None
        return Finished(self.name, self.final, self.final_ms)


@dataclass(frozen=True)
class Screened:
    """A trial fully quantized and briefly timed."""

    trial: Trial
    plain: Plain
    ms: float

    @property
    def name(self) -> str:
        return self.trial.name


def try_candidates(
    candidates: list[Candidate],
    run: RunCandidate,
    source: Path,
    folder: Path,
    budget: float,
    max_steps: int,
    ctx: PassContext,
) -> list[Trial]:
    """Screen every candidate, then search the ones that can still win; see the module doc."""
    trials = [
        _screen(Trial(c, CandidateEntry(name=c.name, settings=c.settings)), run, folder, ctx)
        for c in candidates
    ]
    plain = [
        (t, Plain(t.plain, t.plain_drop))
        for t in trials
        if t.plain is not None and t.plain_drop is not None
    ]
    if not plain:
        return trials
    p50 = _brief_timing({"input": source, **{t.name: p.path for t, p in plain}}, ctx)
    input_ms = p50["input"]
    screened = [Screened(t, p, p50[t.name]) for t, p in plain]
    for one in screened:
        one.trial.plain_ms = one.ms
        one.trial.entry.fully_quantized = FullyQuantized(p50_ms=one.ms, drop=one.plain.drop)
        if one.plain.drop <= budget:
            one.trial.finish(one.plain.path, one.ms)
    # the likeliest to pass with few float nodes first: they keep their speed
    for one in sorted(screened, key=lambda s: (s.plain.drop, s.ms)):
        if one.trial.final is not None:
            continue
        finished = [f for s in screened if (f := s.trial.finished()) is not None]
        reason = _cannot_win(one, input_ms, finished)
        if reason:
            one.trial.entry.verdict = reason
            continue
        room = _size_room(one, finished)
        _search(one.trial, run, folder, source, input_ms, max_steps, room, ctx)
    return trials


def _screen(trial: Trial, run: RunCandidate, folder: Path, ctx: PassContext) -> Trial:
    ctx.log(f"  candidate {trial.name}: fully quantized")
    started = time.perf_counter()
    path = folder / f"{trial.name}.plain.onnx"
    try:
        details = run(trial.candidate, 0, path, None)
    except CompressError:
        raise
    except Exception as e:  # one failing candidate does not stop the others
        trial.entry.verdict = f"failed: {first_line(e, 160)}"
        return trial
    finally:
        trial.seconds += time.perf_counter() - started
    trial.plain, trial.details = path, details
    trial.plain_drop = details.attempts[0].drop
    return trial


def _cannot_win(one: Screened, input_ms: float, finished: list[Finished]) -> str | None:
    """Why searching `one` cannot produce the choice, or None when it might."""
    from compress.measure.speed import clearly_faster, clearly_slower

    drop = f"fully quantized it is over budget (drop {one.plain.drop:.4f})"
    if clearly_slower(one.ms, input_ms):
        return (
            f"not searched: {drop} and already slower than the input "
            f"({one.ms:.3f} vs {input_ms:.3f} ms), and float nodes only add time"
        )
    for best in finished:
        if clearly_slower(one.ms, best.ms):
            return (
                f"not searched: {drop} and already slower ({one.ms:.3f} ms) than "
                f"{best.name} within the budget ({best.ms:.3f} ms)"
            )
        smaller = one.plain.path.stat().st_size * SIZE_TIE < best.path.stat().st_size
        if not clearly_faster(one.ms, best.ms) and not smaller:
            return (
                f"not searched: {drop}; at best as fast as {best.name} within the budget "
                "and not smaller"
            )
    return None


def _size_room(one: Screened, finished: list[Finished]) -> float | None:
    """The float weight (MB) `one`'s search may keep and still be smaller than every candidate
    within the budget that it is not clearly faster than; None: no limit."""
    from compress.measure.speed import clearly_faster

    rivals = [f for f in finished if not clearly_faster(one.ms, f.ms)]
    if not rivals:
        return None
    smallest = min(f.path.stat().st_size for f in rivals)
    return max(smallest / SIZE_TIE - one.plain.path.stat().st_size, 0.0) / 1e6


def finalists(trials: list[Trial]) -> dict[str, Path]:
    """The models within the budget worth the final timing: not more than 10% slower, on the
    screening's brief times, than the fastest of them (closer ones are told apart, or called
    tied, by the final paired timing)."""
    within = [(t, f) for t in trials if (f := t.finished()) is not None]
    if not within:
        return {}
    fastest = min(f.ms for _, f in within)
    kept = {f.name: f.path for _, f in within if f.ms <= fastest * SCREEN_MARGIN}
    for trial, f in within:
        if trial.name not in kept:
            trial.entry.verdict = (
                f"within the budget, but more than {SCREEN_MARGIN - 1:.0%} slower "
                f"({f.ms:.3f} ms) than the fastest candidate within it "
                f"({fastest:.3f} ms) when screened"
            )
    return kept


def _search(
    trial: Trial,
    run: RunCandidate,
    folder: Path,
    source: Path,
    input_ms: float,
    max_steps: int,
    room: float | None,
    ctx: PassContext,
) -> None:
    """The candidate with its fallback (keeping at most `room` MB of weights in float); on
    success, its model and its time on the screening's scale."""
    within = "" if room is None else f" (at most {room:.2f} MB of weights, to stay smaller)"
    ctx.log(f"  candidate {trial.name}: searching for the nodes to keep in float{within}")
    started = time.perf_counter()
    path = folder / f"{trial.name}.onnx"
    try:
        details = run(trial.candidate, max_steps, path, room)
    except CompressError:
        raise
    except Exception as e:  # one failing candidate does not stop the others
        trial.entry.verdict = f"failed: {first_line(e, 160)}"
        return
    finally:
        trial.seconds += time.perf_counter() - started
    trial.details = details
    if not details.budget_met:
        trial.entry.verdict = f"over budget after the fallback: {details.verdict or ''}"
        return
    p50 = _brief_timing({"input": source, "candidate": path}, ctx)
    trial.finish(path, input_ms * p50["candidate"] / p50["input"])


def _brief_timing(paths: dict[str, Path], ctx: PassContext) -> dict[str, float]:
    from compress.measure.speed import first_batch_p50

    _, p50 = first_batch_p50(paths, ctx.timing, ctx.samples, ctx.log, min_runs=SCREEN_RUNS)
    return p50
