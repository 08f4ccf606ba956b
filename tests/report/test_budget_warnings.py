"""An accuracy budget a quantize pass did not hold is a warning in the report and on stderr, and
the run exits 3 when gates.max_accuracy_drop fails on it."""

from __future__ import annotations

import json

import pytest

from compress.quant.auto import AutoDetails
from compress.quant.auto_records import CandidateEntry
from compress.quant.fallback import Attempt
from compress.quant.int8 import QuantizeDetails
from compress.report.budget_warnings import budget_warnings
from compress.report.model import Gate
from tests.helpers.cli import invoke
from tests.helpers.configs import CNN_CONFIG, write_config
from tests.helpers.paths import SAMPLES
from tests.helpers.report_builders import stage


def baseline():
    return stage("baseline", 4000, {"8": 2.0}, 0.99)


def attempt(round_, drop):
    return Attempt(
        round=round_,
        kept_in_float=round_,
        metric=0.99 - drop,
        drop=drop,
        judged_on="data.eval",
        met=False,
        seconds=0.1,
    )


def missed_stage(name="quantize.static", reverted=False):
    details = QuantizeDetails(
        accuracy_budget=0.005,
        budget_met=False,
        float_nodes=["a", "b"],
        attempts=[attempt(0, 0.03), attempt(1, 0.02)],
    )
    return stage(name, 1000, {"8": 1.0}, 0.97, reverted=reverted, details=details)


def gate(passed, value=0.02):
    return Gate(name="max_accuracy_drop", limit=0.005, value=value, passed=passed)


def test_a_missed_budget_without_a_gate_says_how_to_fail_the_job():
    [warning] = budget_warnings([baseline(), missed_stage()], [], "top1")
    assert "quantize.static missed its accuracy budget: top1 drop 0.0200" in warning
    assert "2 node(s) in float" in warning and "set gates.max_accuracy_drop" in warning


@pytest.mark.parametrize("passed", [False, True])
def test_a_missed_budget_with_a_gate_says_what_the_gate_decided(passed):
    [warning] = budget_warnings([baseline(), missed_stage()], [gate(passed, -0.001)], "top1")
    assert f"gate max_accuracy_drop {'passes' if passed else 'fails'}" in warning
    assert "-0.0010" in warning


def test_no_warning_for_a_held_budget_or_a_reverted_stage():
    held = missed_stage()
    held.details.budget_met = True
    pruned = stage("prune.channels", 900, {"8": 1.0}, 0.97)
    stages = [baseline(), held, missed_stage(reverted=True), pruned]
    assert budget_warnings(stages, [], "top1") == []


def test_auto_that_kept_its_input_for_lack_of_a_candidate_within_budget_warns():
    details = AutoDetails(
        accuracy_budget=0.01,
        chosen=None,
        candidates=[
            CandidateEntry(name="static", drop=0.2),
            CandidateEntry(name="dynamic", drop=0.05),
            CandidateEntry(name="broken", verdict="failed: boom"),
        ],
    )
    auto = stage("quantize.auto", 4000, {"8": 2.0}, 0.99, details=details)
    [warning] = budget_warnings([baseline(), auto], [], "cosine")
    assert "kept its input" in warning and "dynamic, dropped cosine by 0.0500" in warning
    details.candidates[1].drop = 0.0  # one held it: kept for speed, not accuracy
    assert budget_warnings([baseline(), auto], [], "cosine") == []


# Cosine drops by a little under int8, so a budget of 0 is missed; no fallback steps keep it fast.
MISSED_BY_GATE = (
    CNN_CONFIG.replace(
        "    per_channel: true\n", "    per_channel: true\n    max_fallback_steps: 0\n"
    ).replace("report: {", "report: {metric: cosine, ")
    + "gates: {max_accuracy_drop: 0}\n"
)
MISSED_BY_PASS = MISSED_BY_GATE.replace("gates: {max_accuracy_drop: 0}\n", "").replace(
    "max_fallback_steps: 0\n", "max_fallback_steps: 0\n    max_accuracy_drop: 0\n"
)


@pytest.mark.parametrize(
    ("text", "code"), [(MISSED_BY_GATE, 3), (MISSED_BY_PASS, 0)], ids=["gate", "pass"]
)
def test_a_missed_budget_is_a_warning_and_fails_the_run_through_the_gate(tmp_path, text, code):
    out = tmp_path / "out"
    config = write_config(tmp_path, text)
    result = invoke("run", SAMPLES / "digits_cnn.pt2", "-c", config, "-o", out, "--json", "-q")
    assert result.exit_code == code, result.stderr
    report = json.loads(result.stdout)
    assert report["stages"][-1]["details"]["budget_met"] is False
    [warning] = [w for w in report["warnings"] if "missed its accuracy budget" in w]
    assert f"warning: {warning}" in result.stderr
    assert warning in (out / "report.md").read_text()
    if code == 3:
        assert "gate max_accuracy_drop fails" in warning
        assert "error: gate failed: max_accuracy_drop: " in result.stderr
        assert "is above the maximum 0" in result.stderr
    else:
        assert "set gates.max_accuracy_drop to fail the job" in warning
