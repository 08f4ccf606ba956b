"""Activation ranges computed once, `calibration: auto`, and the recovery options' bad values."""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from compress.quant import recovery
from compress.quant.int8 import StaticParams
from tests.helpers.cli import assert_refused, invoke
from tests.helpers.configs import CNN_CONFIG, write_config
from tests.helpers.onnx_builders import small_onnx
from tests.helpers.paths import SAMPLES


def test_auto_keeps_the_method_closest_to_the_float_model(tmp_path, monkeypatch):
    """The trials are judged on held-out calibration samples by their output error; here the
    errors are made up (percentile's is smallest), so the choice can only come from them."""
    from compress.measure import evaluate

    source = small_onnx(tmp_path / "m.onnx")
    samples = np.random.default_rng(0).normal(size=(40, 1, 8, 8)).astype(np.float32)
    ctx = SimpleNamespace(
        calibration=SimpleNamespace(inputs={"x": samples}),
        input_names=["x"],
        workdir=tmp_path,
        log=lambda message: None,
        judged_output=0,
    )
    error_of = {"m": 0.0, "trial-minmax": 0.3, "trial-percentile": 0.1, "trial-entropy": 0.2}
    judged = []

    def outputs(path, inputs, index):
        judged.append(len(inputs[0]))
        return np.ones((len(inputs[0]), 10)) * (1 + error_of[path.stem])

    monkeypatch.setattr(evaluate, "onnx_output", outputs)
    trials = []

    def quantize(model, ranges, method, target, keep_float):
        trials.append((method, json.loads(ranges.read_text())["calibration_method"]))
        shutil.copyfile(model, target)

    params = StaticParams(calibration="auto", batch_size=8)
    plan = recovery.plan_static(source, [], params, ctx, quantize)
    assert plan.method == "percentile"
    details = plan.recovery.calibration
    assert details.output_error == pytest.approx({"minmax": 0.3, "percentile": 0.1, "entropy": 0.2})
    assert (details.fit_samples, details.held_out_samples) == (30, 10)
    assert judged == [10] * 4  # the float model and three trials, on the held-out samples only
    assert [m for m, _ in trials] == ["minmax", "percentile", "entropy"]
    assert json.loads(plan.ranges.read_text())["calibration_method"] == trials[1][1]


def test_auto_on_the_cnn_reports_every_methods_error(tmp_path):
    text = CNN_CONFIG.replace("    per_channel: true\n", "    calibration: auto\n")
    out = tmp_path / "out"
    result = invoke(
        "run",
        SAMPLES / "digits_cnn.pt2",
        "-c",
        write_config(tmp_path, text),
        "-o",
        out,
        "--json",
        "-q",
    )
    assert result.exit_code == 0, result.stderr
    stage = json.loads(result.stdout)["stages"][-1]
    errors = stage["details"]["calibration"]["output_error"]
    assert set(errors) == {"minmax", "percentile", "entropy"}
    assert stage["details"]["calibration"]["method"] == min(errors, key=errors.get)
    assert stage["metric"]["value"] >= 0.98


BAD = [
    ("{type: quantize.static, calibration: median}", "passes[0].calibration"),
    ("{type: quantize.static, smooth_alpha: 1.5}", "passes[0].smooth_alpha"),
    ("{type: quantize.static, smooth_alpha: -0.1}", "passes[0].smooth_alpha"),
    ("{type: quantize.static, bias_correction: 3}", "passes[0].bias_correction"),
    ("{type: quantize.static, equalize: sure}", "passes[0].equalize"),
    ("{type: quantize.static, attention_masks: maybe}", "passes[0].attention_masks"),
    ("{type: quantize.dynamic, attention_masks: 2}", "passes[0].attention_masks"),
    ("{type: quantize.static, float_outputs: MatMul}", "passes[0].float_outputs"),
    ("{type: equalize, relu6: bound}", "passes[0].relu6"),
    ("{type: equalize, max_iterations: 0}", "passes[0].max_iterations"),
    ("{type: smooth, alpha: 2}", "passes[0].alpha"),
    ("{type: quantize.static, max_float_weight_mb: -1}", "passes[0].max_float_weight_mb"),
    ("{type: quantize.dynamic, max_float_weight_mb: .nan}", "passes[0].max_float_weight_mb"),
]


@pytest.mark.parametrize(("entry", "key"), BAD, ids=[b[0] for b in BAD])
def test_bad_recovery_options_are_refused_before_any_work(tmp_path, entry, key):
    text = (
        "version: 1\n"
        "data: {calibration: {path: digits_calib.npz, inputs: [x]}}\n"
        f"passes: [{entry}]\n"
    )
    out = tmp_path / "out"
    config = write_config(tmp_path, text)
    assert_refused(invoke("run", SAMPLES / "digits_cnn.pt2", "-c", config, "-o", out), out, key)


def test_smooth_without_calibration_data_is_refused(tmp_path):
    config = write_config(tmp_path, "version: 1\npasses: [{type: smooth}]\n")
    out = tmp_path / "out"
    result = invoke("run", SAMPLES / "text_transformer.ts", "-c", config, "-o", out)
    assert_refused(result, out, "passes[0]", "data.calibration")
