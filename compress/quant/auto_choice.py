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
from typing import Any, Literal

from compress.job.speed_guard import clearly_faster, clearly_slower
from compress.quant.auto_trials import SIZE_TIE

Entry = dict[str, Any]  # one candidate as the report lists it: name, p50_ms, size_bytes, drop...
Verdict = Literal["faster", "slower", "tie"]
Compare = Callable[
    [Entry, Entry], Verdict
]  # how the first entry's speed compares with the second's


def by_p50(entry: Entry, other: Entry) -> Verdict:
    """Faster or slower by more than 3% on p50 alone (no paired rounds to go by)."""
    if clearly_faster(entry["p50_ms"], other["p50_ms"]):
        return "faster"
    if clearly_slower(entry["p50_ms"], other["p50_ms"]):
        return "slower"
    return "tie"


def choose(
    results: list[Entry],
    source: Entry,
    budget: float,
    batch: int,
    gates: Any = None,
    compare: Compare = by_p50,
) -> tuple[str | None, str]:
    """The candidate to keep (None: keep the input) and why; sets every measured candidate's
    `verdict`. `source` is the input's figures (`p50_ms`, `size_bytes`); `gates` a
    GatesSection (or anything with `min_size_ratio` / `min_speedup`), None for none; `compare`
    tells faster, slower and ties apart."""
    usable = []
    for entry in results:
        if "p50_ms" not in entry:
            continue  # failed: its verdict says how
        rejection = _over_budget(entry, budget) or no_gain(entry, source, compare)
        if rejection:
            entry["verdict"] = rejection
        else:
            usable.append(entry)
    if not usable:
        return None, (
            f"no candidate was within the budget and faster than the input, or as fast and "
            f"smaller ({source['p50_ms']:.3f} ms at batch {batch}); the input model is kept"
        )
    targets = _targets(gates)
    meeting = [e for e in usable if not _missed_targets(e, source, targets)]
    pool = meeting or usable
    fastest = min(pool, key=lambda e: e["p50_ms"])
    ties = [e for e in pool if compare(fastest, e) != "faster"]
    smallest = min(e["size_bytes"] for e in ties)
    # tied in speed and within 1% in size: the first in the candidates' order, whatever the noise
    best = next(e for e in ties if e["size_bytes"] <= smallest * SIZE_TIE)
    for entry in usable:
        entry["verdict"] = (
            "chosen"
            if entry is best
            else _lost(entry, best, fastest, source, targets, bool(meeting), compare)
        )
    faster = compare(best, source) == "faster"
    return best["name"], _reason(best, source, budget, batch, targets, bool(meeting), faster)


def no_gain(entry: Entry, source: Entry, compare: Compare = by_p50) -> str | None:
    """Why `entry` does not beat the input on speed or size, or None when it does."""
    timing = f"{entry['p50_ms']:.3f} ms vs {source['p50_ms']:.3f} ms"
    verdict = compare(entry, source)
    if verdict == "slower":
        return f"slower than the input beyond noise: {timing}"
    if verdict == "faster" or entry["size_bytes"] < source["size_bytes"]:
        return None
    return (
        f"no gain: as fast as the input within noise ({timing}) and not smaller "
        f"({_kb(entry)} vs {_kb(source)} KB)"
    )


def confirm(
    entry: Entry, source: Entry, ms: float, input_ms: float, batch: int, compare: Compare = by_p50
) -> str | None:
    """The choice timed again against the input (`ms`, `input_ms`), by the same rules: why it
    no longer beats the input, or None when it still does (a re-timed tie keeps a smaller
    candidate)."""
    rejection = no_gain({**entry, "p50_ms": ms}, {**source, "p50_ms": input_ms}, compare)
    if rejection is None:
        return None
    return f"timed again at batch {batch}: {rejection}"


def _over_budget(entry: Entry, budget: float) -> str | None:
    if entry["drop"] > budget:
        return f"over budget: drop {entry['drop']:.4f} > {budget}"
    return None


def _targets(gates: Any) -> dict[str, float]:
    names = ("min_size_ratio", "min_speedup")
    return {n: getattr(gates, n) for n in names if getattr(gates, n, None) is not None}


def _ratios(entry: Entry, source: Entry) -> dict[str, float]:
    """The gates' figures for `entry`, against the pass's input."""
    return {
        "min_size_ratio": source["size_bytes"] / entry["size_bytes"],
        "min_speedup": source["p50_ms"] / entry["p50_ms"],
    }


def _missed_targets(entry: Entry, source: Entry, targets: dict[str, float]) -> list[str]:
    ratios = _ratios(entry, source)
    return [
        f"{name} ({ratios[name]:.2f}x < {limit:g})"
        for name, limit in targets.items()
        if ratios[name] < limit
    ]


def _lost(entry, best, fastest, source, targets, gates_decided: bool, compare: Compare) -> str:
    """Why a usable candidate was not chosen."""
    missed = _missed_targets(entry, source, targets)
    if gates_decided and missed:
        return f"misses {', '.join(missed)} against the input, which {best['name']} meets"
    if compare(fastest, entry) == "faster":
        return (
            f"slower than {fastest['name']} beyond noise: {entry['p50_ms']:.3f} ms vs "
            f"{fastest['p50_ms']:.3f} ms"
        )
    if entry["size_bytes"] > best["size_bytes"] * SIZE_TIE:
        return (
            f"as fast as {best['name']} within noise ({entry['p50_ms']:.3f} vs "
            f"{best['p50_ms']:.3f} ms) but larger: {_kb(entry)} vs {_kb(best)} KB"
        )
    return (
        f"as fast as {best['name']} within noise ({entry['p50_ms']:.3f} vs "
        f"{best['p50_ms']:.3f} ms) and as small within 1% ({_kb(entry)} vs {_kb(best)} KB): "
        f"{best['name']} comes first in the order candidates are tried"
    )


def _reason(best, source, budget, batch, targets, gates_decided: bool, faster: bool) -> str:
    ms, input_ms = best["p50_ms"], source["p50_ms"]
    speed = f"{input_ms / ms:.2f}x" + ("" if faster else ", within noise")
    text = (
        f"chose {best['name']}: {ms:.3f} ms vs the input's {input_ms:.3f} ms at batch {batch} "
        f"({speed}), {source['size_bytes'] / best['size_bytes']:.2f}x smaller, drop "
        f"{best['drop']:.4f} <= {budget}"
    )
    if targets:
        named = " and ".join(f"{n} {v:g}" for n, v in targets.items())
        text += (
            f"; it meets {named} against the pass's input"
            if gates_decided
            else f"; no candidate met {named} against the pass's input, so they did not decide"
        )
    return text


def _kb(entry: Entry) -> str:
    return f"{entry['size_bytes'] / 1024:.1f}"
