"""Attention masks in int8: finite scales and a softmax that still sees the scores."""

import numpy as np
import onnx
import pytest

from compress.quant.masks import MASK_VALUE, ClampedConstant, clamp_mask_constants, mask_nodes
from tests.helpers.onnx_builders import (
    ATTENTION_SEQ,
    ATTENTION_WIDTH,
    attention_graph,
    run,
    save,
)

SEQ, WIDTH = ATTENTION_SEQ, ATTENTION_WIDTH


def _data(rng, count):
    x = rng.normal(size=(count, SEQ, WIDTH)).astype(np.float32)
    mask = np.ones((count, SEQ), np.int64)
    for row, length in zip(mask, rng.integers(2, SEQ + 1, count), strict=True):
        row[length:] = 0  # padding: masked keys
    return x, mask


def test_clamp_makes_mask_constants_finite_and_keeps_the_float_outputs():
    rng = np.random.default_rng(0)
    original = attention_graph(rng)
    x, mask = _data(rng, 4)
    clamped = onnx.ModelProto()
    clamped.CopyFrom(original)
    changed = clamp_mask_constants(clamped)
    assert changed == [ClampedConstant(tensor="minus", lowest=-np.inf, to=MASK_VALUE)]
    feeds = {"x": x, "attention_mask": mask}
    np.testing.assert_allclose(run(clamped, feeds), run(original, feeds), rtol=1e-6, atol=1e-6)
    # the nodes that carry the mask, up to the Softmax that absorbs it; not the MatMuls
    assert mask_nodes(clamped) == ["mask_bias", "mask_add", "softmax"]
    assert clamp_mask_constants(clamped) == []  # -1e4 itself is left alone


def _static_int8(tmp_path, source, attention_masks: bool):
    from compress.job.pipeline import run as run_pipeline
    from tests.helpers.configs import write_config

    rng = np.random.default_rng(1)
    x, mask = _data(rng, 64)
    np.savez(tmp_path / "calib.npz", x=x[:32], attention_mask=mask[:32])
    np.savez(tmp_path / "eval.npz", x=x[32:], attention_mask=mask[32:])
    text = (
        "version: 1\n"
        "data:\n"
        "  calibration: {path: calib.npz, inputs: [x, attention_mask]}\n"
        "  eval: {path: eval.npz, inputs: [x, attention_mask]}\n"
        f"passes: [{{type: quantize.static, attention_masks: {str(attention_masks).lower()}}}]\n"
        "report: {batch_sizes: [4], metric: cosine, min_runs: 5, min_seconds: 0, "
        "max_seconds: 0.2}\n"
    )
    out = tmp_path / f"out-{attention_masks}"
    config = write_config(tmp_path, text, f"{attention_masks}.yaml")
    report = run_pipeline(source, config, out)
    return report.final, onnx.load(str(out / "model.onnx")).graph


def _scales(graph) -> np.ndarray:
    values = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    return np.concatenate(
        [values[n.input[1]].ravel() for n in graph.node if n.op_type == "QuantizeLinear"]
    )


@pytest.mark.parametrize("mask_value", [-np.inf, np.finfo(np.float32).min])
def test_static_int8_with_a_mask_has_finite_scales_and_keeps_the_softmax(tmp_path, mask_value):
    source = save(attention_graph(np.random.default_rng(2), mask_value), tmp_path / "att.onnx")
    stage, graph = _static_int8(tmp_path, source, attention_masks=True)
    details = stage.details
    assert details.attention_masks.clamped_constants[0].to == MASK_VALUE
    assert details.mask_float_nodes == ["mask_bias", "mask_add", "softmax"]
    assert np.isfinite(_scales(graph)).all()
    assert stage.metric.value > 0.99
    quantized_matmuls = {
        n.name
        for n in graph.node
        if n.op_type == "MatMul" and any(i.endswith("DequantizeLinear_Output") for i in n.input)
    }
    assert {"q_proj", "scores", "attend"} <= quantized_matmuls  # still int8 around the mask

    # turned off, the same graph quantizes the mask with the scores: infinite or useless scales
    stage, graph = _static_int8(tmp_path, source, attention_masks=False)
    value = stage.metric.value
    assert not np.isfinite(_scales(graph)).all() or not np.isfinite(value) or value < 0.9


def test_dynamic_int8_clamps_the_mask_and_keeps_nothing_it_would_not_quantize(tmp_path):
    from compress.job.pipeline import run as run_pipeline
    from tests.helpers.configs import write_config

    rng = np.random.default_rng(3)
    source = save(attention_graph(rng), tmp_path / "att.onnx")
    x, mask = _data(rng, 32)
    np.savez(tmp_path / "eval.npz", x=x, attention_mask=mask)
    text = (
        "version: 1\n"
        "data: {eval: {path: eval.npz, inputs: [x, attention_mask]}}\n"
        "passes: [{type: quantize.dynamic, per_channel: false}]\n"
        "report: {batch_sizes: [4], metric: cosine, min_runs: 5, min_seconds: 0, "
        "max_seconds: 0.2}\n"
    )
    report = run_pipeline(source, write_config(tmp_path, text), tmp_path / "out")
    stage = report.final
    assert stage.details.attention_masks.clamped_constants[0].lowest == -np.inf
    assert stage.details.mask_float_nodes == []  # Where, Add, Softmax: not dynamic ops
    assert stage.metric.value > 0.99
