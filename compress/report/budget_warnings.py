"""Warnings for accuracy budgets a quantize pass did not hold, so a miss is never silent.

A pass's budget (`passes[i].max_accuracy_drop`, else `gates.max_accuracy_drop`) is a target for
its own search (how many nodes to keep in float, which candidate to keep) and is judged against
the pass's input. The CI contract is the gate: `gates.max_accuracy_drop` judges the final model
against the baseline, and a failed gate exits 3. So a miss is always a warning (report.md,
report.html, stderr), and the warning says whether the gate fails the run or how to make it do so:
a pass setting that changed the exit code would be a second, hidden gate. Each stage's Details
say whether and how it missed (`PassDetails.budget_miss`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compress.report.model import Gate, Stage


def budget_warnings(stages: list[Stage], gates: list[Gate], metric: str) -> list[str]:
    """One warning per stage that ended over its accuracy budget, or kept its input because
    nothing held the budget."""
    gate = next((g for g in gates if g.name == "max_accuracy_drop"), None)
    warnings = []
    for stage in stages[1:]:
        if stage.reverted or stage.details is None:
            continue  # the written model does not carry this pass's output
        miss = stage.details.budget_miss(stage.name, metric)
        if miss is not None:
            warnings.append(
                f"{miss.text}; {_consequence(gate)}" if miss.carries_drop else miss.text
            )
    return warnings


def _consequence(gate: Gate | None) -> str:
    if gate is None:
        return "set gates.max_accuracy_drop to fail the job (exit 3) when accuracy is lost"
    if not gate.passed:
        return (
            f"gate max_accuracy_drop fails: the final model's drop against the baseline is "
            f"{_value(gate)}, limit {gate.limit:g}"
        )
    return (
        f"gate max_accuracy_drop passes: the final model's drop against the baseline is "
        f"{_value(gate)}, within {gate.limit:g}"
    )


def _value(gate: Gate) -> str:
    return "not measured" if gate.value is None else f"{gate.value:.4f}"
