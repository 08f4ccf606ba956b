"""Bias correction: the mean error int8 weights leave in each output channel goes away."""

import numpy as np
import onnx
import pytest
from onnx import helper

from compress.quant.bias_correction import correct_biases, input_means, int8_weight
from compress.quant.graph_edit import Graph
from tests.helpers.onnx_builders import float_input, model, run, save
from tests.helpers.quant_models import one_pass_config


def _one_conv(rng, groups: int, stride: int) -> onnx.ModelProto:
    channels = 6
    weight = rng.normal(size=(channels, channels // groups, 3, 3))
    weight *= np.logspace(-2, 0, channels).reshape(-1, 1, 1, 1)  # small channels round badly
    node = helper.make_node(
        "Conv", ["x", "w", "b"], ["y"], "conv", group=groups, strides=[stride] * 2,
        pads=[1, 1, 1, 1],
    )  # fmt: skip
    out = (9 + 2 - 3) // stride + 1
    return model(
        [node],
        [float_input("x", [None, channels, 9, 9])],
        [float_input("y", [None, channels, out, out])],
        {"w": weight, "b": rng.normal(size=channels)},
    )


@pytest.mark.parametrize(("groups", "stride"), [(1, 1), (6, 2)])
def test_corrected_bias_cancels_the_mean_error_of_int8_weights_exactly(groups, stride):
    """On the samples the statistics came from, E[conv(x, W_q) + b'] = E[conv(x, W) + b]: the
    tap means account for zero padding and strides."""
    rng = np.random.default_rng(groups)
    original = _one_conv(rng, groups, stride)
    x = rng.uniform(0, 3, size=(16, 6, 9, 9)).astype(np.float32)  # post-ReLU-like: mean > 0
    reference = run(original, {"x": x})

    quantized = onnx.ModelProto()
    quantized.CopyFrom(original)
    graph = Graph(quantized)
    weight = graph.array("w")
    means = input_means(original, [original.graph.node[0]], [x])
    details = correct_biases(quantized, {"conv"}, means, per_channel=False, reduce_range=False)
    assert details.layers == 1
    graph.set_array("w", int8_weight(weight, None, reduce_range=False))
    corrected = run(quantized, {"x": x})

    uncorrected = onnx.ModelProto()
    uncorrected.CopyFrom(quantized)
    Graph(uncorrected).set_array("b", Graph(original).array("b"))
    error_before = (run(uncorrected, {"x": x}) - reference).mean(axis=(0, 2, 3))
    error_after = (corrected - reference).mean(axis=(0, 2, 3))
    assert np.abs(error_before).max() > 1e-3
    assert np.abs(error_after).max() < 1e-5 + np.abs(error_before).max() / 1000


def test_int8_weight_matches_onnx_runtimes_symmetric_rounding():
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data

    weight = np.random.default_rng(2).normal(size=(4, 5)).astype(np.float32)
    for row in weight:
        zero, scale, quantized = quantize_data(row, TensorProto.INT8, symmetric=True)
        expected = (quantized.astype(np.float64) - zero) * scale
        np.testing.assert_allclose(int8_weight(row, None, False), expected, rtol=1e-6)


def test_bias_correction_in_static_int8_shrinks_the_mean_output_error(tmp_path):
    """A depthwise convolution with per-tensor int8 weights, whose channels' ranges differ by
    100x: the small channels' 9 weights round to a few levels, which shifts their mean."""
    from compress.job.pipeline import run as run_pipeline

    rng = np.random.default_rng(3)
    source = save(_one_conv(rng, groups=6, stride=1), tmp_path / "depthwise.onnx")
    x = rng.uniform(0, 3, size=(96, 6, 9, 9)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x[:64])
    np.savez(tmp_path / "eval.npz", x=x[64:])
    reference = run(source, {"x": x[64:]})
    errors = {}
    for corrected in (False, True):
        entry = f"{{type: quantize.static, per_channel: false, bias_correction: {corrected}}}"
        config = one_pass_config(tmp_path, entry, f"{corrected}.yaml")
        out = tmp_path / f"out-{corrected}"
        report = run_pipeline(source, config, out)
        quantized = run(out / "model.onnx", {"x": x[64:]})
        errors[corrected] = np.abs((quantized - reference).mean(axis=(0, 2, 3))).mean()
        details = report.final.details
        assert (getattr(details, "bias_correction", None) is not None) == corrected
    assert report.final.details.bias_correction.layers == 1
    assert errors[True] < errors[False] / 2, errors
