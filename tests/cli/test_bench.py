"""`compress bench`: one ONNX file measured the way a run measures its stages."""

from __future__ import annotations

import json

from tests.helpers.cli import invoke
from tests.helpers.onnx_builders import small_onnx
from tests.helpers.paths import SAMPLES

QUICK = ("--set", "report={batch_sizes: [4, 1], min_runs: 5, min_seconds: 0, max_seconds: 0.2}")


def test_bench_measures_a_file_and_reports_its_settings(tmp_path):
    model = small_onnx(tmp_path / "linear.onnx")
    result = invoke("bench", model, "--json", *QUICK, "--set", "report.warmup_runs=2")
    assert result.exit_code == 0, result.stderr
    measured = json.loads(result.stdout)
    assert measured["params"] == 64 * 10 + 10 and measured["macs"] == 64 * 10
    assert set(measured["latency_ms"]) == {"4", "1"}
    for figures in measured["latency_ms"].values():
        assert figures["runs"] >= 5 and 0 < figures["p50"] <= figures["p90"] <= figures["p99"]
    settings = measured["latency"]
    assert (settings["batch_sizes"], settings["warmup_runs"], settings["max_seconds"]) == (
        [4, 1],
        2,
        0.2,
    )
    assert settings["input"] == "model.inputs"  # ones shaped like the graph's inputs
    assert measured["environment"]["threads"] == 1


def test_bench_with_the_run_config_matches_the_reports_final_stage(two_runs):
    out = two_runs[0]
    report = json.loads((out / "report.json").read_text())
    config = out.parent / "config.yaml"
    result = invoke("bench", out / "model.onnx", "-c", config, "--set", "report.max_seconds=0.2")
    assert result.exit_code == 0, result.stderr
    assert "p50 ms" in result.stdout and "data.eval samples" in result.stdout
    result = invoke("bench", out / "model.onnx", "-c", config, "--json")
    measured = json.loads(result.stdout)
    final = report["stages"][-1]
    for figure in ("size_bytes", "gzip_bytes", "params", "macs", "sparsity"):
        assert measured[figure] == final[figure], figure
    settings = {k: v for k, v in report["latency"].items() if k != "machine"}
    assert {k: v for k, v in measured["latency"].items() if k != "machine"} == settings
    assert set(measured["latency"]["machine"]) == set(report["latency"]["machine"])


def test_bench_refuses_what_it_cannot_measure(tmp_path):
    for args, needle in [
        ((SAMPLES / "digits_cnn.pt2",), "compress bench measures ONNX files"),
        ((tmp_path / "absent.onnx",), ": not found"),
        ((small_onnx(tmp_path / "m.onnx"), "--set", "report.threads=0"), "from --set"),
        ((small_onnx(tmp_path / "f.onnx", dynamic=False), *QUICK), "fixed at 2"),
    ]:
        result = invoke("bench", *args)
        assert result.exit_code == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], lines


def test_bench_refuses_to_time_generation_of_a_model_without_a_cache(tmp_path):
    model = small_onnx(tmp_path / "linear.onnx")
    result = invoke("bench", model, *QUICK, "--set", "report.generation.new_tokens=4")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "takes no key/value cache" in result.stderr and "Traceback" not in result.stderr
