"""quantize.auto chooses like a user would: within budget faster wins, ties within noise go by
size, as fast as the input and smaller beats the input, slower beyond noise is never kept, and
candidates meeting the size and speed gates are preferred. Synthetic timings: no clock here."""

from __future__ import annotations

import json

from compress.config import GatesSection
from compress.job.pipeline import run
from compress.measure.speed import clearly_slower
from compress.quant.auto import AutoTiming
from compress.quant.auto_choice import choose, confirm
from compress.quant.auto_records import CandidateEntry, InputFigures, Timed
from tests.helpers.cli import invoke
from tests.helpers.configs import CNN_CONFIG, write_config
from tests.helpers.latency import fixed_latency
from tests.helpers.paths import SAMPLES

SOURCE = InputFigures(p50_ms=10.0, size_bytes=4000, metric=0.99)


def candidate(name, p50_ms, drop=0.0, size_bytes=1000):
    return CandidateEntry(name=name, p50_ms=p50_ms, drop=drop, size_bytes=size_bytes)


def verdicts(results):
    return {r.name: r.verdict for r in results}


def copies(results):
    return [r.model_copy() for r in results]


def test_the_fastest_candidate_within_budget_wins():
    results = [
        candidate("fast-but-inaccurate", 2.0, drop=0.05),
        candidate("accurate", 6.0, drop=0.001),
        candidate("faster-accurate", 5.0, drop=0.004),
        CandidateEntry(name="broken", verdict="failed: boom"),
    ]
    chosen, reason = choose(results, SOURCE, 0.005, "at batch 32")
    assert chosen == "faster-accurate" and "(2.00x)" in reason and "4.00x smaller" in reason
    found = verdicts(results)
    assert found["fast-but-inaccurate"] == "over budget: drop 0.0500 > 0.005"
    assert found["accurate"].startswith("slower than faster-accurate beyond noise")
    assert found["faster-accurate"] == "chosen" and found["broken"] == "failed: boom"


def test_candidates_within_noise_of_each_other_go_by_size():
    results = [
        candidate("fastest-but-larger", 5.0, size_bytes=1500),
        candidate("smaller", 5.1, size_bytes=1000),  # 2% slower: within the 3% noise
        candidate("smallest-but-slower", 6.0, size_bytes=900),
    ]
    chosen, _ = choose(results, SOURCE, 0.01, "at batch 32")
    assert chosen == "smaller"
    found = verdicts(results)
    assert found["fastest-but-larger"].startswith("as fast as smaller within noise")
    assert "but larger: 1.5 vs 1.0 KB" in found["fastest-but-larger"]
    assert found["smallest-but-slower"].startswith("slower than fastest-but-larger beyond noise")


def test_tied_in_speed_and_within_1_percent_in_size_the_first_tried_wins():
    """Noise must not pick among equals: the digits CNN's int8 variants differ by bytes."""
    results = [
        candidate("static-per-channel", 5.1, size_bytes=1005),
        candidate("static-per-tensor", 5.0, size_bytes=1000),  # faster by noise, 0.5% smaller
    ]
    chosen, _ = choose(results, SOURCE, 0.01, "at batch 32")
    assert chosen == "static-per-channel"
    assert "comes first in the order candidates are tried" in verdicts(results)["static-per-tensor"]


def test_a_smaller_candidate_as_fast_as_the_input_beats_the_input():
    """The residual CNN: static int8 at 0.565 vs 0.576 ms, 2.4x smaller, used to be dropped."""
    source = InputFigures(p50_ms=0.576, size_bytes=2400, metric=0.99)
    results = [candidate("static", 0.565, size_bytes=1000)]
    chosen, reason = choose(results, source, 0.01, "at batch 32")
    assert chosen == "static"
    assert "within noise" in reason and "2.40x smaller" in reason


def test_a_tie_with_the_input_that_is_not_smaller_is_no_gain():
    results = [candidate("same", 9.9, size_bytes=SOURCE.size_bytes)]
    chosen, reason = choose(results, SOURCE, 0.01, "at batch 32")
    assert chosen is None and "input model is kept" in reason
    assert results[0].verdict.startswith("no gain: as fast as the input within noise")


def test_a_candidate_slower_than_the_input_beyond_noise_is_never_kept():
    results = [
        candidate("a-bit-slower", 10.4, size_bytes=100),  # 4% slower, 40x smaller
        candidate("much-slower", 20.0, size_bytes=100),
    ]
    gates = GatesSection(min_size_ratio=10)  # would prefer either of them
    chosen, reason = choose(results, SOURCE, 0.01, "at batch 32", gates)
    assert chosen is None and "input model is kept" in reason
    assert all(
        v.startswith("slower than the input beyond noise") for v in verdicts(results).values()
    )


def test_candidates_that_meet_the_size_gate_are_preferred():
    results = [
        candidate("fast", 5.0, size_bytes=2000),  # 2x smaller than the input
        candidate("small", 8.0, size_bytes=1000),  # 4x
    ]
    assert choose(copies(results), SOURCE, 0.01, "at batch 32")[0] == "fast"  # no gate: speed
    chosen, reason = choose(results, SOURCE, 0.01, "at batch 32", GatesSection(min_size_ratio=3))
    assert chosen == "small" and "meets min_size_ratio 3 against the pass's input" in reason
    assert verdicts(results)["fast"] == (
        "misses min_size_ratio (2.00x < 3) against the input, which small meets"
    )


def test_candidates_that_meet_the_speed_gate_are_preferred_over_a_smaller_tie():
    results = [
        candidate("smaller", 6.0, size_bytes=1000),  # 1.67x faster than the input
        candidate("quicker", 5.9, size_bytes=2000),  # 1.69x: within noise of "smaller"
    ]
    assert choose(copies(results), SOURCE, 0.01, "at batch 32")[0] == "smaller"  # tie: size
    chosen, _ = choose(results, SOURCE, 0.01, "at batch 32", GatesSection(min_speedup=1.68))
    assert chosen == "quicker"
    assert verdicts(results)["smaller"].startswith("misses min_speedup (1.67x < 1.68)")


def test_gates_no_candidate_meets_do_not_decide():
    results = [candidate("fast", 5.0, size_bytes=2000), candidate("small", 8.0)]
    chosen, reason = choose(results, SOURCE, 0.01, "at batch 32", GatesSection(min_size_ratio=100))
    assert chosen == "fast" and "no candidate met min_size_ratio 100" in reason


def test_timing_again_follows_the_same_rules():
    def timed_again(size_bytes: int, ms: float) -> Timed:
        return Timed("chosen", ms, size_bytes)

    source = SOURCE.timed(10.0)
    assert confirm(timed_again(1000, 5.0), source, "at batch 32") is None  # still faster
    assert (
        confirm(timed_again(1000, 9.9), source, "at batch 32") is None
    )  # a tie, but smaller: kept
    slower = confirm(timed_again(1000, 10.5), source, "at batch 32")
    assert slower == (
        "timed again at batch 32: slower than the input beyond noise: 10.500 ms vs 10.000 ms"
    )
    same_size = timed_again(SOURCE.size_bytes, 9.9)
    assert confirm(same_size, source, "at batch 32").startswith("timed again at batch 32: no gain")


def test_auto_on_the_digits_cnn_reports_a_verdict_for_every_candidate(tmp_path):
    text = (
        CNN_CONFIG.replace(
            "  - type: quantize.static\n    per_channel: true\n",
            "  - type: quantize.auto\n    max_fallback_steps: 0\n",
        )
        + "gates: {min_size_ratio: 2}\n"
    )
    config = write_config(tmp_path, text)
    out = tmp_path / "out"
    result = invoke("run", SAMPLES / "digits_cnn.pt2", "-c", config, "-o", out, "--json", "-q")
    assert result.exit_code in (0, 3), result.stderr  # 3: the size gate, if fp32 was kept
    details = json.loads(result.stdout)["stages"][-1]["details"]
    source, budget = details["input"], details["accuracy_budget"]
    assert budget == 0.01 and set(source) == {"p50_ms", "size_bytes", "metric"}
    candidates = {c["name"]: c for c in details["candidates"]}
    assert "static-per-channel" in candidates and "dynamic" not in candidates  # no MatMul
    for entry in candidates.values():
        assert entry["verdict"], entry
        if "drop" in entry and entry["drop"] > budget:
            assert entry["verdict"].startswith("over budget")
    chosen = [name for name, c in candidates.items() if c["verdict"] == "chosen"]
    assert chosen == ([details["chosen"]] if details.get("chosen") else [])  # left out when None
    if details.get("chosen"):
        kept = candidates[details["chosen"]]
        assert kept["drop"] <= budget and kept["size_bytes"] < source["size_bytes"]
        assert not clearly_slower(kept["p50_ms"], source["p50_ms"])
        assert details["reason"].startswith(f"chose {details['chosen']}: ")
        assert "min_size_ratio 2 against the pass's input" in details["reason"]
        clear = kept["p50_ms"] * 1.25 <= source["p50_ms"]  # a clear win is not timed again
        assert ("a clear win: not timed again" if clear else "; timed again: ") in details["reason"]
    else:
        assert "input model is kept" in details["reason"]
    assert "candidates (budget 0.01)" in (out / "report.md").read_text()


def test_auto_on_a_machine_that_stays_busy_keeps_the_input_and_says_why(tmp_path, monkeypatch):
    """Every timing busy (fixed by the test): auto re-times twice, then claims no speed."""
    from compress.measure import speed as speed_guard

    def busy(paths, samples, settings):
        return fixed_latency({name: 1.0 for name in paths}, settings.batch_sizes, "busy")

    monkeypatch.setattr(speed_guard, "measure_latency", busy)
    text = CNN_CONFIG.replace(
        "  - type: quantize.static\n    per_channel: true\n",
        "  - type: quantize.auto\n    max_fallback_steps: 0\n",
    )
    report = run(SAMPLES / "digits_cnn.pt2", write_config(tmp_path, text), tmp_path / "out")
    details = report.final.details
    assert details.chosen is None and details.timing == AutoTiming(
        machine="busy", retimed=2, shape="batch 8"
    )
    assert "stayed busy through 3 timing(s)" in details.reason
    assert all(c.verdict for c in details.candidates)
