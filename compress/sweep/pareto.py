"""The Pareto fronts of a sweep's variants, and the best variant.

A variant is on the accuracy/latency front when no other variant is at least as accurate and at
least as fast, and better in one of the two (likewise for size). Every metric compress judges by
is better higher (perplexity, better lower, comes in negated). A variant without a metric (no
data.eval) competes on latency or size alone.

The best variant passes the gates. By the default objective, latency: the fastest, where
variants within 3% of the fastest (timing noise between runs) go by size, then by name; size:
the smallest, ties by latency; accuracy: the most accurate, ties by latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from compress.measure.latency import SPEED_TOLERANCE

Objective = Literal["latency", "size", "accuracy"]
OBJECTIVES = ("latency", "size", "accuracy")


@dataclass(frozen=True)
class Point:
    name: str
    p50_ms: float
    size_bytes: int
    metric: float | None
    passed: bool  # its gates


def accuracy(point: Point) -> float:
    """Higher is better; no metric ranks below any."""
    return float("-inf") if point.metric is None else point.metric


def front(points: list[Point], cost: Literal["p50_ms", "size_bytes"]) -> list[str]:
    """The names on the front of accuracy (higher better) against `cost` (lower better)."""

    def dominates(a: Point, b: Point) -> bool:
        no_worse = getattr(a, cost) <= getattr(b, cost) and accuracy(a) >= accuracy(b)
        better = getattr(a, cost) < getattr(b, cost) or accuracy(a) > accuracy(b)
        return no_worse and better

    return [p.name for p in points if not any(dominates(other, p) for other in points)]


def best(points: list[Point], objective: Objective = "latency") -> str | None:
    """The variant to keep among those that pass their gates; None when none does."""
    passing = sorted((p for p in points if p.passed), key=lambda p: p.name)
    if not passing:
        return None
    if objective == "size":
        return min(passing, key=lambda p: (p.size_bytes, p.p50_ms)).name
    if objective == "accuracy":
        top = max(accuracy(p) for p in passing)
        return min((p for p in passing if accuracy(p) >= top), key=lambda p: p.p50_ms).name
    fastest = min(p.p50_ms for p in passing)
    tied = [p for p in passing if p.p50_ms <= fastest * SPEED_TOLERANCE]
    return min(tied, key=lambda p: (p.size_bytes, p.p50_ms)).name
