"""compress.quant.nbits: the algorithms, 8-bit nodes, k-quant's blocks, the head, the level."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from compress.quant.nbits import (
    WeightPlan,
    fitting_blocks,
    odd_blocks,
    output_heads,
    quantize_weights,
    set_accuracy_level,
    weight_matmuls,
)
from tests.helpers import onnx_builders

WIDTH = 384  # three blocks of 128: the width k-quant's packing crashed on


def two_matmuls(rng: np.random.Generator, width: int = WIDTH) -> onnx.ModelProto:
    """x [batch, width] -> MatMul (skewed weights) -> Relu -> MatMul + bias -> y (an output)."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], "hidden"),
        helper.make_node("Relu", ["h"], ["a"], "relu"),
        helper.make_node("MatMul", ["a", "w2"], ["z"], "head"),
        helper.make_node("Add", ["z", "b2"], ["y"], "head_bias"),
    ]
    return onnx_builders.model(
        nodes,
        [onnx_builders.float_input("x", ["batch", width])],
        [onnx_builders.float_input("y", ["batch", 8])],
        {
            "w1": rng.uniform(0.0, 1.0, size=(width, 32)),  # all positive: a zero point helps
            "w2": rng.normal(size=(32, 8)),
            "b2": rng.normal(size=8),
        },
    )


def nbits(model: onnx.ModelProto) -> dict[str, dict]:
    return {
        n.name: {a.name: helper.get_attribute_value(a) for a in n.attribute} | {"inputs": n.input}
        for n in model.graph.node
        if n.op_type == "MatMulNBits"
    }


def error(rng, plan: WeightPlan) -> tuple[float, onnx.ModelProto]:
    x = rng.normal(size=(16, WIDTH)).astype(np.float32)
    built = two_matmuls(np.random.default_rng(0))
    expected = onnx_builders.run(built, {"x": x})
    quantized = quantize_weights(two_matmuls(np.random.default_rng(0)), plan)
    got = onnx_builders.run(quantized, {"x": x})
    return float(np.linalg.norm(got - expected) / np.linalg.norm(expected)), quantized


def test_asymmetric_round_to_nearest_beats_symmetric_on_one_sided_weights():
    head_float = frozenset({"head"})
    asymmetric, model = error(
        np.random.default_rng(1), WeightPlan("rtn_asymmetric", 32, excluded=head_float)
    )
    symmetric, symmetric_model = error(
        np.random.default_rng(1), WeightPlan("rtn_symmetric", 32, excluded=head_float)
    )
    assert asymmetric < symmetric / 2
    assert len(nbits(model)["hidden_Q4"]["inputs"]) == 4  # with zero points
    assert len(nbits(symmetric_model)["hidden_Q4"]["inputs"]) == 3


@pytest.mark.parametrize("algorithm", ["hqq", "k_quant"])
def test_every_algorithm_writes_4_bit_nodes_close_to_float(algorithm):
    blocks = fitting_blocks(weight_matmuls(two_matmuls(np.random.default_rng(0))), 32)
    blocks = blocks if algorithm == "k_quant" else {}
    relative, model = error(np.random.default_rng(2), WeightPlan(algorithm, 32, blocks=blocks))
    assert relative < 0.2  # a broken packing gives errors near 1
    assert {n["bits"] for n in nbits(model).values()} == {4}


def test_k_quant_takes_a_smaller_block_where_the_width_is_an_odd_number_of_blocks():
    model = two_matmuls(np.random.default_rng(0))
    blocks = fitting_blocks(weight_matmuls(model), 128)
    assert blocks == {"hidden": 64, "head": 16}  # 384 = 3 x 128 -> 6 x 64; 32 rows -> 2 x 16
    relative, quantized = error(np.random.default_rng(3), WeightPlan("k_quant", 128, blocks=blocks))
    assert nbits(quantized)["hidden_Q4"]["block_size"] == 64 and relative < 0.2


def test_a_width_odd_at_every_block_is_named():
    model = two_matmuls(np.random.default_rng(0), width=48)  # 3 blocks of 16
    matmuls = weight_matmuls(model)
    assert odd_blocks(matmuls, fitting_blocks(matmuls, 16), 16) == ["hidden"]
    assert (
        odd_blocks(matmuls, fitting_blocks(matmuls, 64), 64) == []
    )  # 48 rows: 2 blocks of 32, padded


def test_the_head_is_found_through_its_bias_and_held_at_8_bits():
    model = two_matmuls(np.random.default_rng(0))
    assert output_heads(model) == ["head"]
    quantized = quantize_weights(model, WeightPlan("rtn_asymmetric", 32, eight_bit={"head"}))
    assert {name: n["bits"] for name, n in nbits(quantized).items()} == {
        "hidden_Q4": 4,
        "head_Q8": 8,
    }


def test_8_bits_everywhere_and_excluded_nodes_stay_float():
    plan = WeightPlan("rtn_asymmetric", 32, bits=8, excluded=frozenset({"head"}))
    quantized = quantize_weights(two_matmuls(np.random.default_rng(0)), plan)
    assert {name: n["bits"] for name, n in nbits(quantized).items()} == {"hidden_Q8": 8}
    assert nbits(quantized)["hidden_Q8"]["block_size"] == 128  # 8 bits: long blocks (384 rows)
    assert "head" in {n.name for n in quantized.graph.node if n.op_type == "MatMul"}


def test_accuracy_level_is_set_and_removed():
    plan = WeightPlan("rtn_asymmetric", 32, accuracy_level=4)
    quantized = quantize_weights(two_matmuls(np.random.default_rng(0)), plan)
    assert {n["accuracy_level"] for n in nbits(quantized).values()} == {4}
    set_accuracy_level(quantized, 0)
    assert all("accuracy_level" not in n for n in nbits(quantized).values())
