"""Timings a user can trust: a busy machine is detected and said, comparisons are paired, and
`compress bench --compare` times two files the same way. No test here asserts a speed: the
timings are synthetic, or only the machine's state is checked."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from compress.measure.interference import CpuWatch
from compress.measure.latency import paired_speedup
from tests.helpers.cli import invoke
from tests.helpers.configs import write_config
from tests.helpers.latency import fixed_latency
from tests.helpers.onnx_builders import small_onnx


def rounds(ms: float, noise: float, count: int = 8, seed: int = 0) -> list[float]:
    """Per-round medians around `ms` with +-`noise` relative jitter."""
    rng = np.random.default_rng(seed)
    return list(ms * (1 + noise * rng.uniform(-1, 1, count)))


@pytest.mark.parametrize(
    ("reference_ms", "model_ms", "verdict"),
    [(1.3, 1.0, "faster"), (1.0, 1.3, "slower"), (1.01, 1.0, "tie"), (1.0, 1.0, "tie")],
)
def test_a_paired_interval_tells_a_real_speedup_from_noise(reference_ms, model_ms, verdict):
    reference, model = rounds(reference_ms, 0.05, seed=1), rounds(model_ms, 0.05, seed=2)
    speedup = paired_speedup(reference, model)
    assert speedup.verdict == verdict
    assert speedup.low <= speedup.ratio <= speedup.high


def test_drift_that_slows_a_whole_round_cancels_in_the_pairing():
    """Both models slowed alike in some rounds (a neighbour came and went): still 1.3x."""
    drift = np.array([1, 1, 3, 1, 2.5, 1, 1, 4.0])
    speedup = paired_speedup(list(1.3 * drift), list(1.0 * drift))
    assert speedup.verdict == "faster" and speedup.low == pytest.approx(1.3)
    unpaired = np.median(1.3 * drift) / np.median(drift)
    assert unpaired == pytest.approx(1.3)  # the medians agree here; the interval is what pairs


def test_a_single_round_is_never_called_faster():
    assert paired_speedup([2.0], [1.0]).verdict == "tie"


@pytest.fixture
def cpu_hog():
    """A busy loop in another process, for the whole test."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.3)  # let it get going
    yield hog
    hog.kill()
    hog.wait()


def watch(seconds: float = 1.0):
    with CpuWatch() as watched:
        time.sleep(seconds)
    return watched.load


# A second test worker is load too: these run with the machine to themselves (make test's
# serial part), as the hog would slow the other worker's tests.
@pytest.mark.serial
def test_a_busy_loop_in_another_process_makes_the_machine_busy(cpu_hog):
    load = watch()
    assert load.state == "busy" and load.busy
    assert load.other_cpu_cores > 0.5
    assert "other processes used" in load.describe()


@pytest.mark.serial
def test_a_quiet_machine_is_quiet_and_a_short_timing_cannot_tell():
    assert watch().state == "quiet"
    assert watch(0.01).state == "unknown"


CONFIG = """\
version: 1
data:
  eval: {path: digits_eval.npz, inputs: [x], labels: y}
report: {batch_sizes: [4], min_runs: 8, min_seconds: 0.6, warmup_runs: 1, max_seconds: 2}
"""


@pytest.mark.serial
def test_a_run_timed_beside_a_busy_loop_says_so_everywhere(tmp_path, cpu_hog):
    model = small_onnx(tmp_path / "model.onnx")
    out = tmp_path / "out"
    result = invoke("run", str(model), "-c", str(write_config(tmp_path, CONFIG)), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    machine = report["latency"]["machine"]["4"]
    assert machine["state"] == "busy" and machine["other_cpu_cores"] > 0.5
    assert report["stages"][0]["latency_ms"]["4"]["stable"] is False
    [warning] = [w for w in report["warnings"] if "busy machine" in w]
    assert "re-run on a quiet machine" in warning
    assert warning in result.stderr.replace("\n", " ") or "busy machine" in result.stderr
    assert "busy machine" in (out / "report.md").read_text()
    assert "busy machine" in (out / "report.html").read_text()


def test_a_quiet_run_records_its_machine_and_the_speedup_interval(tmp_path):
    model = small_onnx(tmp_path / "model.onnx")
    text = CONFIG + "passes: [{type: quantize.dynamic}]\n"
    out = tmp_path / "out"
    result = invoke("run", str(model), "-c", str(write_config(tmp_path, text)), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["latency"]["machine"]["4"]["state"] in ("quiet", "busy")
    low, high = report["summary"]["speedup_ci"]
    assert low <= report["summary"]["speedup"] <= high
    assert report["summary"]["speedup_verdict"] in ("faster", "slower", "tie")
    paired = report["stages"][1]["vs_input"]["4"]
    assert set(paired) == {"speedup", "ci", "verdict"}
    env = report["environment"]
    assert isinstance(env["cpu_flags"], list) and env["pinned"] is False
    assert "95% CI" in (out / "report.md").read_text()


def test_pinned_threads_are_recorded_and_the_cores_given_back(tmp_path):
    import os

    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this OS")
    before = os.sched_getaffinity(0)
    text = CONFIG.replace("max_seconds: 2}", "max_seconds: 2, pin_threads: true}")
    from compress.job.pipeline import run

    report = run(small_onnx(tmp_path / "m.onnx"), write_config(tmp_path, text), tmp_path / "o")
    assert report.environment.pinned is True
    assert os.sched_getaffinity(0) == before


def test_bench_compare_times_two_files_paired(tmp_path):
    a, b = small_onnx(tmp_path / "a.onnx"), small_onnx(tmp_path / "b.onnx")
    settings = ["--set", "report.batch_sizes=[4]", "--set", "report.min_seconds=0"]
    result = invoke("bench", str(a), "--compare", str(b), "--json", *settings)
    assert result.exit_code == 0, result.stderr
    measured = json.loads(result.stdout)
    paired = measured["compare"]["speedup"]["4"]
    assert paired["ci"][0] <= paired["speedup"] <= paired["ci"][1]
    assert set(measured["compare"]["latency_ms"]["4"]) >= {"p50", "p90", "runs"}
    table = invoke("bench", str(a), "--compare", str(b), *settings)
    assert table.exit_code == 0 and "timed in alternation" in table.stdout
    assert "95% CI" in table.stdout


def test_bench_compare_refuses_a_model_with_other_inputs(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    a = small_onnx(tmp_path / "a.onnx")
    x = helper.make_tensor_value_info("other", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["other"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), tmp_path / "b.onnx")
    result = invoke("bench", str(a), "--compare", str(tmp_path / "b.onnx"))
    assert result.exit_code == 2
    assert "takes other inputs" in result.stderr and "Traceback" not in result.stderr


def test_the_speed_guard_reverts_nothing_on_a_machine_that_stays_busy(tmp_path, monkeypatch):
    """The output twice as slow, but every timing busy (fixed by the test): not reverted."""
    from compress.job.pipeline import run
    from compress.measure import speed as speed_guard

    def busy(paths, samples, settings):
        p50 = {name: 1.0 if i == 0 else 2.0 for i, name in enumerate(paths)}
        return fixed_latency(p50, settings.batch_sizes, "busy")

    monkeypatch.setattr(speed_guard, "measure_latency", busy)
    text = CONFIG + "passes: [{type: quantize.dynamic, on_slower: revert}]\n"
    report = run(small_onnx(tmp_path / "m.onnx"), write_config(tmp_path, text), tmp_path / "o")
    stage = report.final
    assert stage.reverted is False
    assert "could not judge" in stage.details.speed_guard
    assert "stayed busy through 3 timing(s)" in stage.details.speed_guard
