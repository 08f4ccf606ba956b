"""Per-node int8 sensitivity: the ranking, its robustness, the cache, `compress analyze`, and
what report.json and report.html show."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from compress.quant.sensitivity import measure_sensitivity, restricted_to
from compress.quant.sensitivity.cache import AnalysisCache
from compress.quant.sensitivity.tensors import RUINED, TensorError
from compress.quant.sensitivity.twins import quantized_twins
from tests.helpers.cli import assert_refused, invoke
from tests.helpers.configs import write_config
from tests.helpers.paths import SAMPLES
from tests.helpers.quant_models import LAYERS, outlier_mlp, samples, static_config


class _Reader:
    def __init__(self, data: np.ndarray):
        self._batches = iter([{"x": data}])

    def get_next(self):
        return next(self._batches, None)


def _static(source, target, exclude=()):
    from onnxruntime.quantization import QuantFormat, quantize_static

    quantize_static(
        str(source),
        str(target),
        _Reader(samples(64, seed=1)),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        nodes_to_exclude=list(exclude),
    )
    return target


def _dynamic(source, target):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return target


@pytest.mark.parametrize("quantize", [_static, _dynamic], ids=["static-qdq", "dynamic"])
def test_the_layer_that_reads_an_outlier_tensor_ranks_first(tmp_path, quantize):
    """Linear 2's output has one channel 1000x the others: int8 rounds the rest to nothing, and
    Linear 3, which reads them, is ruined (static: through the tensor's QDQ; dynamic: through its
    own quantized input)."""
    source = outlier_mlp(tmp_path / "m.onnx", [(2, 1000.0)])
    quantized = quantize(source, tmp_path / "q.onnx")
    sensitivity = measure_sensitivity(source, quantized, [samples(64)], tmp_path)
    worst, runner_up = sensitivity.nodes[:2]
    assert worst.node == LAYERS[3]
    assert worst.output_error > 0.2 and worst.output_error > 5 * runner_up.output_error
    assert sensitivity.ranked_by == "output_error" and sensitivity.isolated
    # every quantized Gemm is scored; MatMul -> MatMulInteger renames do not lose one
    assert {LAYERS[i] for i in range(6)} <= {n.node for n in sensitivity.nodes}
    if quantize is _static:  # the producer rounds the tensor: it goes back to float too
        assert LAYERS[2] in worst.group and worst.fused == ["/7/Relu"]
    details = sensitivity.details(limit=3)
    assert details.shown == 3 and details.scored == len(sensitivity.nodes)
    assert [n.node for n in details.nodes] == [n.node for n in sensitivity.nodes[:3]]
    json.dumps(details.written(), allow_nan=False)  # no NaN or infinity in report.json


def test_a_node_kept_in_float_is_not_scored(tmp_path):
    source = outlier_mlp(tmp_path / "m.onnx", [(2, 1000.0)])
    kept = [LAYERS[3], LAYERS[2], "/5/Relu"]
    quantized = _static(source, tmp_path / "q.onnx", exclude=kept)
    sensitivity = measure_sensitivity(source, quantized, [samples(64)], tmp_path, set(kept))
    assert LAYERS[3] not in {n.node for n in sensitivity.nodes}
    assert sensitivity.nodes[0].output_error < 0.05


def test_fused_relu_compares_through_the_quantizers_clamp(tmp_path):
    """QDQ fuses Linear+Relu: the Gemm writes the Relu's output before its QuantizeLinear, still
    negative where the Relu would cut; the twin is clamped to that QuantizeLinear's range."""
    source = outlier_mlp(tmp_path / "m.onnx", [])
    quantized = _static(source, tmp_path / "q.onnx")
    twins = quantized_twins(onnx.load(str(quantized)).graph)
    assert twins["/1/Relu_output_0"].low == 0.0
    sensitivity = measure_sensitivity(source, quantized, [samples(64)], tmp_path)
    assert all(n.sqnr_db > 25 for n in sensitivity.nodes)  # nothing looks ruined


def test_tensor_errors_survive_nan_infinity_and_zeros():
    error = TensorError()
    error.add(np.array([1.0, -np.inf, np.nan, 2.0]), np.array([1.0, -np.inf, np.nan, 2.5]))
    assert error.broken == 0 and error.values == 2 and error.noise == pytest.approx(0.25)
    error.add(np.array([np.inf]), np.array([3.0]))  # finite where the float model is not
    assert error.broken == 1 and error.noise_ratio == RUINED
    zero = TensorError()
    zero.add(np.zeros(4), np.zeros(4))
    assert zero.usable and zero.noise_ratio == 0.0
    noisy_zero = TensorError()
    noisy_zero.add(np.zeros(4), np.full(4, 1e-3))
    assert not noisy_zero.usable  # noise on no signal has no scale to be judged by
    mismatched = TensorError()
    mismatched.add(np.zeros(4), np.zeros(5))
    assert not mismatched.usable


def test_a_ranking_serves_a_quantization_that_changes_a_subset_of_its_nodes(tmp_path):
    source = outlier_mlp(tmp_path / "m.onnx", [(2, 1000.0)])
    sensitivity = measure_sensitivity(
        source, _static(source, tmp_path / "q.onnx"), [samples(64)], tmp_path
    )
    cache = AnalysisCache()
    cache.remember(source, "static", sensitivity)
    subset = {LAYERS[0], LAYERS[3]}
    assert cache.sensitivity(source, "static", subset) is sensitivity
    assert cache.sensitivity(source, "dynamic", subset) is None  # another scheme
    assert cache.sensitivity(source, "static", subset | {"not-quantized-before"}) is None
    narrowed = restricted_to(sensitivity, subset)
    assert {n.node for n in narrowed.nodes} <= subset and narrowed.quantized == subset
    assert all(set(n.group) <= subset for n in narrowed.nodes)


def test_analyze_writes_the_ranking_and_keeps_no_model(tmp_path):
    outlier_mlp(tmp_path / "m.onnx", [(2, 1000.0)])
    config = static_config(tmp_path)
    out = tmp_path / "out"
    result = invoke("analyze", tmp_path / "m.onnx", "-c", config, "-o", out, "--json", "-q")
    assert result.exit_code == 0, result.stderr
    written = json.loads((out / "sensitivity.json").read_text())
    assert written == json.loads(result.stdout)
    assert sorted(p.name for p in out.iterdir()) == [
        "sensitivity.html",
        "sensitivity.json",
        "sensitivity.md",
    ]
    assert written["pass"]["type"] == "quantize.static"
    assert written["sensitivity"]["nodes"][0]["node"] == LAYERS[3]
    assert written["metric"]["drop"] > 0.01  # the ruined layer shows in the whole model too
    assert 'data-chart="sensitivity"' in (out / "sensitivity.html").read_text()
    assert LAYERS[3] in (out / "sensitivity.md").read_text()
    again = invoke("analyze", tmp_path / "m.onnx", "-c", config, "-o", out)
    assert again.exit_code == 2 and "--force" in again.stderr  # a used folder, like run


def test_analyze_takes_quantize_auto_through_its_static_candidate(tmp_path):
    config = write_config(
        tmp_path,
        "version: 1\n"
        "data:\n"
        "  calibration: {path: digits_calib.npz, inputs: [x], limit: 32}\n"
        "  eval: {path: digits_eval.npz, inputs: [x], labels: y, limit: 64}\n"
        "passes: [{type: prune.magnitude, amount: 0.5}, {type: quantize.auto}]\n",
    )
    out = tmp_path / "out"
    result = invoke("analyze", SAMPLES / "digits_cnn.pt2", "-c", config, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    written = json.loads(result.stdout)
    assert written["pass"]["from"] == "passes[1], quantize.auto's static-per-channel candidate"
    assert written["pass"]["settings"]["per_channel"] is True
    assert "prune.magnitude" in written["notes"][0]  # what was not run is said
    assert written["sensitivity"]["scored"] >= 4


@pytest.mark.parametrize(
    "passes, needle",
    [
        ("[{type: quantize.fp16}]", "passes: compress analyze"),
        ("[{type: quantize.static, pruning: 1}]", "passes[0].pruning"),
    ],
)
def test_analyze_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path, passes, needle):
    outlier_mlp(tmp_path / "m.onnx", [])
    config = static_config(tmp_path, passes=f"passes: {passes}\n")
    out = tmp_path / "out"
    result = invoke("analyze", tmp_path / "m.onnx", "-c", config, "-o", out)
    assert_refused(result, out, needle)


def test_analyze_refuses_a_model_it_cannot_read(tmp_path):
    config = static_config(tmp_path)
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    out = tmp_path / "out"
    result = invoke("analyze", tmp_path / "broken.onnx", "-c", config, "-o", out)
    assert_refused(result, out, "broken.onnx")


def test_report_json_and_html_show_the_sensitivity_of_an_int8_stage(two_runs):
    from compress.report.compare import load_report
    from compress.report.html import to_html

    report = json.loads((two_runs[0] / "report.json").read_text())
    details = report["stages"][-1]["details"]["sensitivity"]
    errors = [n["output_error"] for n in details["nodes"]]
    assert errors == sorted(errors, reverse=True) and len(errors) == details["shown"]
    assert details["scored"] >= details["shown"] and details["samples"] > 0
    assert {"node", "op_type", "added_error", "sqnr_db", "group"} <= set(details["nodes"][0])
    page = to_html(load_report(two_runs[0] / "report.json"))
    assert 'data-chart="sensitivity-1"' in page and details["nodes"][0]["node"][-10:] in page
