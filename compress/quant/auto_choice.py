"""How quantize.auto picks among its measured candidates, the way a user would.

The rules, in order:

1. A candidate over the accuracy budget, or slower than the pass's input beyond measurement
   noise, is never kept. quantize.auto compares models timed together paired (`speed_guard`:
   the 95% interval of the per-round ratios, and more than 3%); `by_p50` is the 3% rule on p50s
   alone, for figures that were not timed together.
2. The rest must beat the input: faster beyond noise, or as fast within noise and smaller
   (a residual CNN's static int8 timed 0.565 vs 0.576 ms and was 2.4x smaller: that is a win,
   not a tie to throw away).
3. Where `gates` name `min_size_ratio` or `min_speedup`, candidates that meet them are preferred.
   The gates compare the final model with the baseline; a pass only sees its own input, so the
   ratios here are against that input: exact when the quantize pass is the only one, stricter
   when earlier passes already shrank or sped up the model. Preferring never rejects: when no
   candidate meets them, the choice is made among all.
4. Among those, faster wins; candidates within noise of the fastest are ranked by size, smaller
   first (a timing difference smaller than the noise says nothing, a size difference is exact);
   sizes within 1% of the smallest are a tie too, and the first such candidate in the order
   they were tried wins, so the same models give the same choice every time.

Every measured candidate gets a `verdict` that says why it won or lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

from compress.measure.speed import clearly_faster, clearly_slower
from compress.quant.auto_records import CandidateEntry, InputFigures, Timed
from compress.quant.auto_trials import SIZE_TIE

Verdict = Literal["faster", "slower", "tie"]
Compare = Callable[
    [Timed, Timed], Verdict
]  # how the first model's speed compares with the second's


class SizeAndSpeedGates(Protocol):
    """The gates the choice prefers candidates by (a GatesSection)."""

    @property
    def min_size_ratio(self) -> float | None: ...

    @property
    def min_speedup(self) -> float | None: ...


def by_p50(timed: Timed, other: Timed) -> Verdict:
    """Faster or slower by more than 3% on p50 alone (no paired rounds to go by)."""
    if clearly_faster(timed.p50_ms, other.p50_ms):
        return "faster"
    if clearly_slower(timed.p50_ms, other.p50_ms):
        return "slower"
    return "tie"


def choose(
    results: list[CandidateEntry],
    source: InputFigures,
    budget: float,
    shape: str,
    gates: SizeAndSpeedGates | None = None,
    compare: Compare = by_p50,
) -> tuple[str | None, str]:
    """The candidate to keep (None: keep the input) and why; sets every measured candidate's
    `verdict`. `source` is the input's figures; `shape` what a p50 is the time of, as the reason
    says it ("at batch 8", "per decode step at batch 1 ..."); `gates` None for none; `compare`
    tells faster, slower and ties apart."""
    input_timed = source.timed()
    usable: list[tuple[CandidateEntry, Timed, float]] = []
    for entry in results:
        timed = entry.timed()
        if timed is None or entry.drop is None:
            continue  # failed, or never timed: its verdict says how
        rejection = _over_budget(entry.drop, budget) or no_gain(timed, input_timed, compare)
        if rejection:
            entry.verdict = rejection
        else:
            usable.append((entry, timed, entry.drop))
    if not usable:
        return None, (
            f"no candidate was within the budget and faster than the input, or as fast and "
            f"smaller ({source.p50_ms:.3f} ms {shape}); the input model is kept"
        )
    targets = _targets(gates)
    meeting = [u for u in usable if not _missed_targets(u[1], input_timed, targets)]
    pool = meeting or usable
    fastest = min((timed for _, timed, _ in pool), key=lambda t: t.p50_ms)
    ties = [timed for _, timed, _ in pool if compare(fastest, timed) != "faster"]
    smallest = min(t.size_bytes for t in ties)
    # tied in speed and within 1% in size: the first in the candidates' order, whatever the noise
    best = next(t for t in ties if t.size_bytes <= smallest * SIZE_TIE)
    for entry, timed, _ in usable:
        entry.verdict = (
            "chosen"
            if timed is best
            else _lost(timed, best, fastest, input_timed, targets, bool(meeting), compare)
        )
    drop = next(drop for _, timed, drop in usable if timed is best)
    faster = compare(best, input_timed) == "faster"
    return best.name, _reason(
        best, drop, input_timed, budget, shape, targets, bool(meeting), faster
    )


def no_gain(timed: Timed, source: Timed, compare: Compare = by_p50) -> str | None:
    """Why `timed` does not beat the input on speed or size, or None when it does."""
    timing = f"{timed.p50_ms:.3f} ms vs {source.p50_ms:.3f} ms"
    verdict = compare(timed, source)
    if verdict == "slower":
        return f"slower than the input beyond noise: {timing}"
    if verdict == "faster" or timed.size_bytes < source.size_bytes:
        return None
    return (
        f"no gain: as fast as the input within noise ({timing}) and not smaller "
        f"({_kb(timed)} vs {_kb(source)} KB)"
    )


def confirm(chosen: Timed, source: Timed, shape: str, compare: Compare = by_p50) -> str | None:
    """The choice timed again against the input (both with their new p50s), by the same rules:
    why it no longer beats the input, or None when it still does (a re-timed tie keeps a smaller
    candidate)."""
    rejection = no_gain(chosen, source, compare)
    if rejection is None:
        return None
    return f"timed again {shape}: {rejection}"


def _over_budget(drop: float, budget: float) -> str | None:
    if drop > budget:
        return f"over budget: drop {drop:.4f} > {budget}"
    return None


def _targets(gates: SizeAndSpeedGates | None) -> dict[str, float]:
    if gates is None:
        return {}
    found = {"min_size_ratio": gates.min_size_ratio, "min_speedup": gates.min_speedup}
    return {name: limit for name, limit in found.items() if limit is not None}


def _ratios(timed: Timed, source: Timed) -> dict[str, float]:
    """The gates' figures for `timed`, against the pass's input."""
    return {
        "min_size_ratio": source.size_bytes / timed.size_bytes,
        "min_speedup": source.p50_ms / timed.p50_ms,
    }


def _missed_targets(timed: Timed, source: Timed, targets: dict[str, float]) -> list[str]:
    ratios = _ratios(timed, source)
    return [
        f"{name} ({ratios[name]:.2f}x < {limit:g})"
        for name, limit in targets.items()
        if ratios[name] < limit
    ]


def _lost(
    timed: Timed,
    best: Timed,
    fastest: Timed,
    source: Timed,
    targets: dict[str, float],
    gates_decided: bool,
    compare: Compare,
) -> str:
    """Why a usable candidate was not chosen."""
    missed = _missed_targets(timed, source, targets)
    if gates_decided and missed:
        return f"misses {', '.join(missed)} against the input, which {best.name} meets"
    if compare(fastest, timed) == "faster":
        return (
            f"slower than {fastest.name} beyond noise: {timed.p50_ms:.3f} ms vs "
            f"{fastest.p50_ms:.3f} ms"
        )
    if timed.size_bytes > best.size_bytes * SIZE_TIE:
        return (
            f"as fast as {best.name} within noise ({timed.p50_ms:.3f} vs "
            f"{best.p50_ms:.3f} ms) but larger: {_kb(timed)} vs {_kb(best)} KB"
        )
    return (
        f"as fast as {best.name} within noise ({timed.p50_ms:.3f} vs "
        f"{best.p50_ms:.3f} ms) and as small within 1% ({_kb(timed)} vs {_kb(best)} KB): "
        f"{best.name} comes first in the order candidates are tried"
    )


def _reason(
    best: Timed,
    drop: float,
    source: Timed,
    budget: float,
    shape: str,
    targets: dict[str, float],
    gates_decided: bool,
    faster: bool,
) -> str:
    ms, input_ms = best.p50_ms, source.p50_ms
    speed = f"{input_ms / ms:.2f}x" + ("" if faster else ", within noise")
    text = (
        f"chose {best.name}: {ms:.3f} ms vs the input's {input_ms:.3f} ms {shape} "
        f"({speed}), {source.size_bytes / best.size_bytes:.2f}x smaller, drop "
        f"{drop:.4f} <= {budget}"
    )
    if targets:
        named = " and ".join(f"{n} {v:g}" for n, v in targets.items())
        text += (
            f"; it meets {named} against the pass's input"
            if gates_decided
            else f"; no candidate met {named} against the pass's input, so they did not decide"
        )
    return text


def _kb(timed: Timed) -> str:
    return f"{timed.size_bytes / 1024:.1f}"
