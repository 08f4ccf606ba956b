"""Summary and gate verdicts are derived from the measured stages."""

from compress.config import GatesSection
from compress.report import evaluate_gates, flag_slower_stages, summarize, to_markdown
from compress.report.model import Stage, Summary
from tests.helpers.report_builders import hand_made_report, stage


def _stage(name, size, p50, top1) -> Stage:
    return stage(name, size, {"32": p50}, top1)


def _summary(size_ratio, speedup, accuracy_drop, final_size_mb) -> Summary:
    return Summary(
        size_ratio=size_ratio,
        gzip_ratio=size_ratio,
        speedup=speedup,
        speedup_batch=32,
        accuracy_drop=accuracy_drop,
        final_size_mb=final_size_mb,
    )


def test_summary_compares_final_with_baseline():
    summary = summarize([_stage("baseline", 4000, 2.0, 0.99), _stage("q", 1000, 1.0, 0.97)], 32)
    assert summary.size_ratio == 4.0
    assert summary.speedup == 2.0
    assert abs(summary.accuracy_drop - 0.02) < 1e-9


def test_gates_pass_and_fail_on_their_limits():
    summary = _summary(3.5, 0.9, 0.02, 1.0)
    gates = GatesSection(max_accuracy_drop=0.01, min_speedup=0.8, min_size_ratio=4, max_size_mb=1.0)
    verdicts = {g.name: g.passed for g in evaluate_gates(gates, summary)}
    assert verdicts == {
        "max_accuracy_drop": False,
        "min_speedup": True,
        "min_size_ratio": False,
        "max_size_mb": True,
    }


def test_gate_without_a_value_fails():
    [verdict] = evaluate_gates(GatesSection(max_accuracy_drop=0.5), _summary(1, 1, None, 1))
    assert verdict.passed is False


def test_markdown_lists_every_stage_and_gate():
    stages = [_stage("baseline", 4000, 2.0, 0.99), _stage("quantize.static", 1000, 1.0, 0.98)]
    flagged, warnings = flag_slower_stages(stages, [32])
    report = hand_made_report(
        flagged,
        summarize(stages, 32),
        gates=[{"name": "min_speedup", "limit": 3, "value": 2.0, "passed": False}],
        warnings=warnings,
    )
    text = to_markdown(report)
    assert "| quantize.static |" in text and "**FAIL**" in text and "4.00x" in text
    assert "| min_speedup | 3 | 2.0000 | **FAIL** |" in text


def test_a_stage_slower_than_its_input_is_flagged_and_named():
    stages = [
        _stage("baseline", 4000, 2.0, 0.99),
        _stage("a", 1000, 1.0, 0.99),
        _stage("b", 900, 1.5, 0.99),
    ]
    flagged, [warning] = flag_slower_stages(stages, [32])
    assert [s.slower_than_input for s in flagged] == [False, False, True]
    assert warning.startswith("stage b is slower than its input a")


def test_a_slowdown_at_a_later_batch_size_is_named_but_not_the_speed_guards_flag():
    baseline = stage("baseline", 4000, {"32": 2.0, "1": 0.030}, 0.99)
    quantized = stage("q", 1000, {"32": 1.0, "1": 0.034}, 0.99)  # faster at 32, slower at 1
    [_, flagged], [warning] = flag_slower_stages([baseline, quantized], [32, 1])
    assert flagged.slower_than_input is False
    assert flagged.slower_at_batch_sizes == [1]
    assert "at batch 1: p50 0.034 ms vs 0.030 ms (0.88x)" in warning
