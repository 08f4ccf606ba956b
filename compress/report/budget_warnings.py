"""Warnings for accuracy budgets a quantize pass did not hold, so a miss is never silent.

A pass's budget (`passes[i].max_accuracy_drop`, else `gates.max_accuracy_drop`) is a target for
its own search (how many nodes to keep in float, which candidate to keep) and is judged against
the pass's input. The CI contract is the gate: `gates.max_accuracy_drop` judges the final model
against the baseline, and a failed gate exits 3. So a miss is always a warning (report.md,
report.html, stderr), and the warning says whether the gate fails the run or how to make it do so:
a pass setting that changed the exit code would be a second, hidden gate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compress.quant.auto import AutoDetails
    from compress.quant.int8 import QuantizeDetails
    from compress.report.model import Gate, Stage


def budget_warnings(stages: list[Stage], gates: list[Gate], metric: str) -> list[str]:
    """One warning per stage that ended over its accuracy budget, or (quantize.auto) kept its
    input because no candidate held the budget."""
    from compress.quant.auto import AutoDetails
    from compress.quant.int8 import QuantizeDetails

    gate = next((g for g in gates if g.name == "max_accuracy_drop"), None)
    warnings = []
    for stage in stages[1:]:
        details = stage.details
        if stage.reverted:
            continue  # the written model does not carry this pass's output
        if isinstance(details, QuantizeDetails) and details.budget_met is False:
            warnings.append(f"{_missed(stage.name, details, metric)}; {_consequence(gate)}")
        elif isinstance(details, AutoDetails) and (
            kept := _kept_input(stage.name, details, metric)
        ):
            warnings.append(kept)
    return warnings


def _missed(name: str, details: QuantizeDetails, metric: str) -> str:
    """A fallback's output over budget: the closest attempt was kept and written."""
    drops = [attempt.drop for attempt in details.attempts]
    drop = f"{metric} drop {min(drops):.4f}" if drops else f"the {metric} drop"
    return (
        f"stage {name} missed its accuracy budget: {drop} against its input, limit "
        f"{details.accuracy_budget}, with {len(details.float_nodes)} node(s) in float; the model "
        "written carries that drop"
    )


def _kept_input(name: str, details: AutoDetails, metric: str) -> str | None:
    """quantize.auto kept its input because every candidate it measured was over budget: no
    accuracy is lost, but the int8 model the recipe asked for is not there either."""
    budget = details.accuracy_budget
    measured = [c for c in details.candidates if c.drop is not None]
    if details.chosen is not None or not measured or budget is None:
        return None
    if any(c.drop <= budget for c in measured):
        return None
    closest = min(measured, key=lambda c: c.drop)
    return (
        f"stage {name} kept its input: no int8 candidate held the accuracy budget {budget} "
        f"(the closest, {closest.name}, dropped {metric} by {closest.drop:.4f}); raise "
        "max_accuracy_drop, or exclude the nodes that lose accuracy, to get an int8 model"
    )


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
