"""Cross-layer equalization: same float outputs, flatter per-channel weight ranges."""

import numpy as np
import onnx

from compress.quant.equalize import conv_pairs, equalize, fold_batchnorm, range_spread
from compress.quant.graph_edit import Graph
from tests.helpers.onnx_builders import conv_chain, run


def _copy(built):
    other = onnx.ModelProto()
    other.CopyFrom(built)
    return other


def test_equalization_keeps_the_float_outputs_and_flattens_the_ranges():
    rng = np.random.default_rng(0)
    original = conv_chain(rng)
    x = {"x": rng.normal(size=(4, 3, 8, 8)).astype(np.float32)}
    reference = run(original, x)

    folded = _copy(original)
    assert fold_batchnorm(folded) == 1
    graph = Graph(folded)
    pairs = conv_pairs(graph)
    # conv1 -> ReLU -> depthwise, depthwise -> ReLU -> pointwise
    assert [(p.first.name, p.second.name) for p in pairs] == [("conv1", "dw"), ("dw", "pw")]
    before = range_spread(graph, pairs)

    equalized = _copy(original)
    details = equalize(equalized, relu6="skip", max_iterations=50)
    assert details.pairs == 2 and details.batchnorm_folded == 1
    assert "BatchNormalization" not in {n.op_type for n in equalized.graph.node}
    onnx.checker.check_model(equalized, full_check=True)
    assert details.range_spread.before == round(before, 3)
    assert details.range_spread.after < details.range_spread.before / 10
    output = run(equalized, x)
    np.testing.assert_allclose(output, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


def test_relu6_pairs_are_skipped_by_default_and_become_relu_when_asked():
    rng = np.random.default_rng(1)
    original = conv_chain(rng, activation="Clip")
    x = {"x": rng.normal(size=(2, 3, 8, 8)).astype(np.float32) * 3}
    reference = run(original, x)

    skipped = _copy(original)
    details = equalize(skipped, relu6="skip", max_iterations=20)
    assert details.relu6_pairs == 2 and details.pairs == 0
    np.testing.assert_allclose(run(skipped, x), reference, rtol=1e-5, atol=1e-5)

    replaced = _copy(original)
    details = equalize(replaced, relu6="relu", max_iterations=20)
    assert details.clips_replaced_by_relu == 2 and details.pairs == 2
    assert "Clip" not in {n.op_type for n in replaced.graph.node}
    # ReLU6 -> ReLU is not the same function: activations above 6 pass through now
    assert not np.allclose(run(replaced, x), reference, atol=1e-3)
