"""The goal lines every part of the benchmark prints: `[met]` or `[missed]`, then what was
measured against the goal."""

from __future__ import annotations


def goal_line(text: str, met: bool) -> str:
    return f"[{'met' if met else 'missed'}] {text}"


def print_goals(checks: list[tuple[str, bool]]) -> int:
    """Print each goal's line; the exit code of a part run alone: 0 when every goal was met."""
    for text, met in checks:
        print(goal_line(text, met))
    return 0 if all(met for _, met in checks) else 1
