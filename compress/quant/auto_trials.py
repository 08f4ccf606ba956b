"""How quantize.auto tries its candidates without paying for every fallback.

Each candidate is first quantized plainly (every node it quantizes at its bits, no search, no
node ranking) and judged on data.eval; then all of them are timed together with the input,
briefly, as the final timing will time them (a decoder's decode steps, or the first batch size).
A fully quantized model is as fast as that candidate gets (keeping nodes in float, or a
weight-only candidate's MatMuls at 8 bits instead of 4, only adds work), so the fallback then
runs only where it can still pay off, fastest first:
- a candidate within the budget as it is needs none;
- one slower than the input beyond noise is never kept, so it is not searched;
- one slower beyond noise than a candidate already within the budget, or as fast and not
  smaller by 1% or more, cannot win, so it is not searched either;
- one only as fast as a candidate within the budget can win only by size, so an int8
  candidate's search may keep in float only as much weight as leaves it 1% smaller
  (`max_float_weight_mb`; a weight-only candidate's search has no such limit: its 4/8-bit mixes
  stay well under an int8 model's size).
Only the models within the budget that are not slower beyond noise than the fastest of them go
on to the final timing (at the report's settings) that the choice is made on.
Every candidate's entry says which of these happened and how long it took. A candidate's drop
and metric are the ones its pass judged the model it wrote by (`Fallback.kept_round`): no model is
judged twice.
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
    from compress.measure.speed import Timer
    from compress.passes.context import PassContext
    from compress.quant.fallback import Attempt, Fallback

SCREEN_MARGIN = 1.10  # slower than this on the brief timing: not worth the final timing
SIZE_TIE = 1.01  # sizes closer than 1% are a tie (not worth a search, nor a choice)

# run(candidate, max_fallback_steps, target, max_float_weight_mb): the candidate's pass on the
# input -> its details (an int8 pass's or quantize.int4's: both hold a Fallback)
RunCandidate = Callable[[Candidate, int, Path, "float | None"], "Fallback"]


@dataclass(frozen=True)
class Plain:
    """A candidate fully quantized: its model and the round that judged it on data.eval."""

    path: Path
    judged: Attempt

    @property
    def drop(self) -> float:
        return self.judged.drop


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
    plain: Plain | None = None  # fully quantized
    plain_ms: float | None = None  # its brief timing
    final: Path | None = None  # within the budget: `plain` or the fallback's model
    final_ms: float | None = None  # estimated on the screening's time scale
    judged: Attempt | None = None  # how its pass judged `final` on data.eval
    seconds: float = 0.0
    details: Fallback | None = None  # the last run of its pass

    @property
    def name(self) -> str:
        return self.candidate.name

    def finish(self, path: Path, ms: float, judged: Attempt) -> None:
        self.final, self.final_ms, self.judged = path, ms, judged

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
    timer: Timer,
) -> list[Trial]:
    """Screen every candidate, then search the ones that can still win (timing models with
    `timer`, briefly); see the module doc."""
    trials = [
        _screen(Trial(c, CandidateEntry(name=c.name, settings=c.settings)), run, folder, ctx)
        for c in candidates
    ]
    plain = [(t, t.plain) for t in trials if t.plain is not None]
    if not plain:
        return trials
    p50 = timer({"input": source, **{t.name: p.path for t, p in plain}}, True).p50
    input_ms = p50["input"]
    screened = [Screened(t, p, p50[t.name]) for t, p in plain]
    for one in screened:
        one.trial.plain_ms = one.ms
        one.trial.entry.fully_quantized = FullyQuantized(p50_ms=one.ms, drop=one.plain.drop)
        if one.plain.drop <= budget:
            one.trial.finish(one.plain.path, one.ms, one.plain.judged)
    # the likeliest to pass with few float nodes first: they keep their speed
    for one in sorted(screened, key=lambda s: (s.plain.drop, s.ms)):
        if one.trial.final is not None:
            continue
        finished = [f for s in screened if (f := s.trial.finished()) is not None]
        reason = _cannot_win(one, input_ms, finished)
        if reason:
            one.trial.entry.verdict = reason
            continue
        room = None if one.trial.candidate.weight_only else _size_room(one, finished)
        _search(one.trial, run, folder, source, input_ms, max_steps, room, ctx, timer)
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
    trial.details = details
    judged = details.kept_round()
    if judged is None:  # every candidate's pass is run with a budget and data.eval
        trial.entry.verdict = "failed: its pass did not judge the model it wrote"
        return trial
    trial.plain = Plain(path, judged)
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
    timer: Timer,
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
    judged = details.kept_round()
    if not details.budget_met or judged is None:
        trial.entry.verdict = f"over budget after the fallback: {details.verdict or ''}"
        return
    p50 = timer({"input": source, "candidate": path}, True).p50
    trial.finish(path, input_ms * p50["candidate"] / p50["input"], judged)
