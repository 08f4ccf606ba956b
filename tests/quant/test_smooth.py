"""SmoothQuant: same float outputs, flatter activation channels, Muls kept in float by int8."""

import numpy as np
import onnx
import pytest
from onnx import helper

from compress.quant.smooth import SMOOTH_PREFIX, smooth, smoothed_nodes
from tests.helpers.onnx_builders import (
    SMOOTH_SEQ,
    SMOOTH_WIDTH,
    float_input,
    layernorm_graph,
    model,
    run,
    save,
)
from tests.helpers.quant_models import one_pass_config

WIDTH, SEQ = SMOOTH_WIDTH, SMOOTH_SEQ


@pytest.mark.parametrize("residual", [False, True])
def test_smoothing_keeps_the_float_outputs_and_flattens_the_channels(residual):
    rng = np.random.default_rng(0)
    original = layernorm_graph(rng, residual)
    x = rng.normal(size=(6, SEQ, WIDTH)).astype(np.float32)
    smoothed = onnx.ModelProto()
    smoothed.CopyFrom(original)
    details = smooth(smoothed, [x], alpha=0.5)
    onnx.checker.check_model(smoothed, full_check=True)
    [site] = details.sites
    assert site.matmuls == 2  # the MatMul and the Gemm behind the Reshape
    assert site.folded_into == ("mul" if residual else "layernorm")
    spread = site.channel_range_spread
    assert spread.after < spread.before / 3
    names = smoothed_nodes(smoothed)
    # the Mul, and the LayerNorm and residual Add around it, stay float in int8
    assert names == ([f"{SMOOTH_PREFIX}t", "norm", "residual"] if residual else [])
    for expected, got in zip(run_all(original, x), run_all(smoothed, x), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def run_all(built, x):
    import onnxruntime as ort

    session = ort.InferenceSession(built.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def test_static_int8_keeps_smoothquants_mul_in_float(tmp_path):
    from compress.job.pipeline import run as run_pipeline
    from tests.helpers.configs import write_config

    rng = np.random.default_rng(1)
    source = save(layernorm_graph(rng, residual=True), tmp_path / "ln.onnx")
    x = rng.normal(size=(48, SEQ, WIDTH)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x[:32])
    np.savez(tmp_path / "eval.npz", x=x[32:])
    text = (
        "version: 1\n"
        "data:\n"
        "  calibration: {path: calib.npz, inputs: [x]}\n"
        "  eval: {path: eval.npz, inputs: [x]}\n"
        "passes: [{type: quantize.static, per_channel: true, smooth_alpha: 0.5}]\n"
        "report: {batch_sizes: [4], metric: cosine, min_runs: 5, min_seconds: 0, "
        "max_seconds: 0.2}\n"
    )
    report = run_pipeline(source, write_config(tmp_path, text), tmp_path / "out")
    details = report.final.details
    assert len(details.smooth.sites) == 1
    graph = onnx.load(str(tmp_path / "out" / "model.onnx")).graph
    [mul] = [n for n in graph.node if n.op_type == "Mul" and n.name.startswith(SMOOTH_PREFIX)]
    producers = {o: n for n in graph.node for o in n.output}
    assert producers[mul.input[0]].op_type != "DequantizeLinear"  # reads the float tensor
    reader = next(n for n in graph.node if mul.output[0] in n.input)
    assert reader.op_type == "QuantizeLinear"  # what the MatMul reads is quantized after it
    assert report.final.metric.value > 0.99
    assert run(tmp_path / "out" / "model.onnx", {"x": x[:2]}).shape == (2, SEQ, 8)


def test_layernorms_that_share_their_scale_are_smoothed_apart():
    """The dynamo exporter stores equal initializers once (every fresh LayerNorm reads the same
    ones; the TorchScript exporter reads them through Identity nodes): each LayerNorm gets its
    own copy before its scale changes."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Identity", ["gamma"], ["gamma_alias"], "alias"),
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["t1"], "norm1"),
        helper.make_node("LayerNormalization", ["x", "gamma_alias", "beta"], ["t2"], "norm2"),
        helper.make_node("MatMul", ["t1", "w1"], ["y1"], "matmul1"),
        helper.make_node("MatMul", ["t2", "w2"], ["y2"], "matmul2"),
    ]
    gamma = np.ones(WIDTH)
    gamma[3] = 50.0
    weights = {"gamma": gamma, "beta": np.zeros(WIDTH)}
    weights |= {f"w{i}": rng.normal(size=(WIDTH, 8)) for i in (1, 2)}
    outputs = [float_input(f"y{i}", [None, SEQ, 8]) for i in (1, 2)]
    original = model(nodes, [float_input("x", [None, SEQ, WIDTH])], outputs, weights)
    x = rng.normal(size=(4, SEQ, WIDTH)).astype(np.float32)
    smoothed = onnx.ModelProto()
    smoothed.CopyFrom(original)
    details = smooth(smoothed, [x], alpha=0.5)
    assert [s.folded_into for s in details.sites] == ["layernorm", "layernorm"]
    scales = {n.name: n.input[1] for n in smoothed.graph.node if n.op_type == "LayerNormalization"}
    assert len(set(scales.values())) == 2
    for expected, got in zip(run_all(original, x), run_all(smoothed, x), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_float_outputs_keep_matmul_outputs_out_of_int8(tmp_path):
    """A transformer's MatMul outputs feed the residual stream; with float_outputs the MatMul
    still reads int8 inputs and weights, but nothing quantizes what it writes."""
    from compress.job.pipeline import run as run_pipeline

    rng = np.random.default_rng(3)
    source = save(layernorm_graph(rng, residual=False), tmp_path / "ln.onnx")
    x = rng.normal(size=(48, SEQ, WIDTH)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x[:32])
    np.savez(tmp_path / "eval.npz", x=x[32:])
    graphs = {}
    for outputs in ("[]", "[MatMul, Gemm]"):
        entry = f"{{type: quantize.static, op_types: [MatMul, Gemm], float_outputs: {outputs}}}"
        config = one_pass_config(tmp_path, entry, f"c{len(graphs)}.yaml")
        out = tmp_path / f"out{len(graphs)}"
        run_pipeline(source, config, out)
        graphs[outputs] = onnx.load(str(out / "model.onnx")).graph

    def quantized_outputs(graph):
        written = {o: n.op_type for n in graph.node for o in n.output}
        return {
            written[n.input[0]]
            for n in graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] in written
        }

    assert {"MatMul", "Gemm"} <= quantized_outputs(graphs["[]"])
    assert not {"MatMul", "Gemm"} & quantized_outputs(graphs["[MatMul, Gemm]"])
    dequantized_weights = sum(
        n.op_type == "DequantizeLinear" for n in graphs["[MatMul, Gemm]"].node
    )
    assert dequantized_weights >= 3  # the two weights and the shared input are still int8
