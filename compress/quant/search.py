"""The smallest prefix of a ranked list that passes a test, in few probes.

The accuracy-aware fallback ranks the quantized nodes by the error each adds and asks: how many
of the worst must go back to float for the model to meet its budget? A probe costs a
quantization and an evaluation, so the search probes a guess first (from the ranking's own
estimate of the error each prefix removes), gallops up from it while the test fails, then
bisects: O(log n) probes instead of one per node. It assumes that a longer prefix never does
worse, which holds for the error the ranking measures but only roughly for accuracy; whatever
it returns has passed the test itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class SearchResult:
    smallest: int | None  # the smallest passing prefix found; None: none passed
    probed: list[int] = field(default_factory=list)  # prefixes in the order they were tried
    exhausted: bool = False  # the whole list was tried and failed: no prefix can pass
    out_of_probes: bool = False  # stopped by max_probes before the answer was certain


def smallest_passing(
    count: int, passes: Callable[[int], bool], max_probes: int, guess: int = 1
) -> SearchResult:
    """The smallest k in 1..count with passes(k), assuming passes(0) is False and that
    passes is monotone in k; at most `max_probes` calls of `passes`."""
    result = SearchResult(None)
    if count <= 0 or max_probes <= 0:
        result.exhausted = count <= 0
        result.out_of_probes = count > 0
        return result
    failing, passing = 0, None  # the largest known failure, the smallest known success
    k = min(max(guess, 1), count)
    while passing is None:  # bracket: gallop up from the guess
        if len(result.probed) == max_probes:
            result.out_of_probes = True
            return result
        result.probed.append(k)
        if passes(k):
            passing = k
        elif k == count:
            result.exhausted = True
            return result
        else:
            failing, k = k, min(count, 2 * k)
    while passing - failing > 1:  # bisect between the two
        if len(result.probed) == max_probes:
            result.out_of_probes = True
            break
        middle = (failing + passing) // 2
        result.probed.append(middle)
        if passes(middle):
            passing = middle
        else:
            failing = middle
    result.smallest = passing
    return result


def guess_from_noise(noise: list[float], drop: float, budget: float) -> int:
    """The shortest prefix that, if the metric's drop is proportional to the noise left (true
    of cosine for small noise: 1 - cos = noise ratio / 2), brings `drop` within `budget`."""
    total = sum(noise)
    if total <= 0 or drop <= 0:
        return 1
    allowed = total * (1 - budget / drop)  # the noise that must go
    removed = 0.0
    for index, value in enumerate(noise, start=1):
        removed += value
        if removed >= allowed:
            return index
    return len(noise)
