"""quantize.int4: Gemm with constant weights becomes 4-bit MatMul, the head 8-bit, embedding
tables int8 unless that misses the accuracy budget, accuracy_level as asked or timed."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper

from compress.quant.int4_details import Int4Details
from compress.quant.int4_speed import level_for, unpaired_verdict
from compress.quant.weight_rewrites import gemms_as_matmul
from tests.helpers import onnx_builders
from tests.helpers.cli import assert_refused, invoke, run_cli
from tests.helpers.int4_models import bits, int8_tables, ops, run_int4, zero_points


def gemm_model(rng: np.random.Generator) -> onnx.ModelProto:
    """x [batch, 16] -> Gemm (transB, alpha 0.5, bias * beta 2) -> Gemm (no bias)."""
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], "first", transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Gemm", ["h", "w2"], ["y"], "second"),
    ]
    return onnx_builders.model(
        nodes,
        [onnx_builders.float_input("x", ["batch", 16])],
        [onnx_builders.float_input("y", ["batch", 4])],
        {
            "w1": rng.normal(size=(32, 16)),
            "b1": rng.normal(size=32),
            "w2": rng.normal(size=(32, 4)),
        },
    )


def test_gemms_become_matmul_plus_bias_with_the_same_outputs():
    rng = np.random.default_rng(0)
    built = gemm_model(rng)
    x = rng.normal(size=(3, 16)).astype(np.float32)
    expected = onnx_builders.run(built, {"x": x})
    assert gemms_as_matmul(built) == ["first", "second"]
    onnx.checker.check_model(built, full_check=True)
    assert [n.op_type for n in built.graph.node] == ["MatMul", "Add", "MatMul"]
    assert {i.name for i in built.graph.initializer}.isdisjoint({"w1", "w2"})  # no float copies
    np.testing.assert_allclose(onnx_builders.run(built, {"x": x}), expected, rtol=1e-5, atol=1e-5)


def test_int4_quantizes_gemm_and_embedding_tables_by_default(tmp_path):
    written, float_out, int4_out, details = run_int4(tmp_path)
    assert "Gemm" not in ops(written) and "MatMulNBits" in ops(written)
    assert details["gemm_rewritten_as_matmul"] == 2
    # the head writes the model's output: 8 bits; accuracy_level: auto timed both levels
    assert bits(written) == {"hidden_Q4": 4, "head_Q8": 8}
    assert details["eight_bit"] == ["head"] and details["four_bit"] == 1
    # algorithm: auto on a model that is not a decoder with its cache: zero points per block
    assert details["algorithm"] == "rtn_asymmetric" and zero_points(written) == {True}
    assert details["accuracy_level"] in (0, 4) and "level 0" in details["accuracy_level_timing"]
    assert details["embedding_tables_int8"] == ["table"]
    assert int8_tables(written) == ["table_int8"]
    cosine = np.sum(float_out * int4_out) / np.linalg.norm(float_out) / np.linalg.norm(int4_out)
    assert cosine > 0.99


def test_int4_keeps_float_embeddings_when_they_miss_the_budget(tmp_path):
    entry = "{type: quantize.int4, max_accuracy_drop: 0.0}"  # any rounding at all misses it
    written, _, _, details = run_int4(tmp_path, entry)
    assert details["embeddings_kept_float"] == ["table"] and details["embeddings_drop"] > 0
    # the model written (tables in float) is the last round judged: the mix's closest without
    # what the tables cost
    *mix, last = details["attempts"]
    closest = min(a["drop"] for a in mix if a["judged_on"] == "data.eval")
    assert last["drop"] == pytest.approx(closest - details["embeddings_drop"], abs=1e-6)
    assert not last["met"] and not details["budget_met"]
    assert int8_tables(written) == [] and "MatMulNBits" in ops(written)
    assert "table" in {i.name for i in written.graph.initializer}


def test_int4_refuses_a_model_without_matmul_or_gemm(tmp_path):
    rng = np.random.default_rng(0)
    model = onnx_builders.save(onnx_builders.conv_chain(rng), tmp_path / "c.onnx")
    np.savez(tmp_path / "eval.npz", x=rng.normal(size=(8, 3, 8, 8)).astype(np.float32))
    config = tmp_path / "int4.yaml"
    config.write_text(
        "version: 1\ndata: {eval: {path: eval.npz, inputs: [x]}}\n"
        "passes:\n  - type: quantize.int4\nreport: {metric: cosine}\n"
    )
    out = tmp_path / "out"
    result = run_cli(model, config, out, "--quiet")
    assert_refused(result, out, "passes[0]", "no MatMul or Gemm", "quantize.static")


def test_int4_keeps_int8_embeddings_within_the_budget(tmp_path):
    written, _, _, details = run_int4(tmp_path, "{type: quantize.int4, max_accuracy_drop: 0.5}")
    # the tables ride in every round of the mix; judged apart only when the mix misses
    assert details["embedding_tables_int8"] == ["table"] and details["budget_met"]
    assert "embeddings_drop" not in details
    assert int8_tables(written) == ["table_int8"]


def test_int8_weights_with_a_budget_say_whether_they_hold_it(tmp_path):
    """bits: 8 has no mix to search; with a budget the model is judged once and says so."""
    *_, details = run_int4(tmp_path, "{type: quantize.int4, bits: 8, max_accuracy_drop: 0.5}")
    [judged] = details["attempts"]
    assert details["budget_met"] is True and judged["met"] and judged["judged_on"] == "data.eval"
    assert "bits: 8 leaves no mix to search" in details["verdict"]
    (tmp_path / "strict").mkdir()
    *_, missed = run_int4(
        tmp_path / "strict", "{type: quantize.int4, bits: 8, max_accuracy_drop: 0}"
    )
    record = Int4Details.model_validate(missed)
    assert missed["budget_met"] is False
    assert "with its MatMuls at 8 bits" in record.budget_miss("quantize.int4", "cosine").text


def test_int4_budget_without_eval_data_is_refused(tmp_path):
    config = tmp_path / "int4.yaml"
    config.write_text("version: 1\npasses:\n  - {type: quantize.int4, max_accuracy_drop: 0.01}\n")
    result = invoke("validate", config)
    assert result.exit_code == 2
    assert "passes[0].max_accuracy_drop needs data.eval" in result.stderr


def test_int4_takes_the_algorithm_level_and_head_bits_asked(tmp_path):
    entry = "{type: quantize.int4, algorithm: rtn_symmetric, accuracy_level: 1, head_bits: 4}"
    written, _, _, details = run_int4(tmp_path, entry)
    assert bits(written) == {"hidden_Q4": 4, "head_Q4": 4} and not details.get("eight_bit")
    levels = {
        helper.get_attribute_value(a)
        for n in written.graph.node
        for a in n.attribute
        if a.name == "accuracy_level"
    }
    assert levels == {1} and details.get("accuracy_level_timing") is None
    heads = [n for n in written.graph.node if n.name == "head_Q4"]
    assert heads[0].input[3] == ""  # symmetric: no zero points (the bias folded in after)


def test_a_tie_keeps_level_4_and_a_slower_level_4_is_dropped():
    assert (level_for("faster"), level_for("tie"), level_for("slower")) == (4, 4, 0)
    # a busy machine gives no paired verdict: p50s beyond the speed guard's 3% decide
    assert [unpaired_verdict(ms, 100.0) for ms in (120.0, 101.0, 80.0)] == [
        "slower",
        "tie",
        "faster",
    ]


def three_layers(path, rng: np.random.Generator):
    """x [batch, 64] -> MatMul a -> Relu -> MatMul b -> Relu -> MatMul c -> Relu -> MatMul head.
    b's rows 0, 16, 32, 48 are huge and read channels a leaves at zero: they add nothing to its
    output, but set its 4-bit scales, so its other weights round to a few levels."""
    weights = {f"w_{name}": rng.normal(size=(64, 64)) / 8 for name in ("a", "b", "c", "head")}
    weights["w_a"][:, ::16] = 0
    weights["w_b"][::16, :] *= 40
    nodes, previous = [], "x"
    for name in ("a", "b", "c", "head"):
        nodes.append(helper.make_node("MatMul", [previous, f"w_{name}"], [name], name))
        if name != "head":
            nodes.append(helper.make_node("Relu", [name], [f"{name}_relu"], f"{name}_relu"))
            previous = f"{name}_relu"
    built = onnx_builders.model(
        nodes,
        [onnx_builders.float_input("x", ["batch", 64])],
        [onnx_builders.float_input("head", ["batch", 64])],
        weights,
    )
    return onnx_builders.save(built, path)


def test_a_budget_moves_the_costliest_matmul_to_8_bits_and_shows_the_mix(tmp_path):
    rng = np.random.default_rng(0)
    model = three_layers(tmp_path / "m.onnx", rng)
    np.savez(tmp_path / "eval.npz", x=rng.normal(size=(64, 64)).astype(np.float32))
    config = tmp_path / "int4.yaml"
    config.write_text(
        "version: 1\ndata: {eval: {path: eval.npz, inputs: [x]}}\n"
        "passes:\n  - {type: quantize.int4, accuracy_level: 0, max_accuracy_drop: 0.01}\n"
        "report: {batch_sizes: [4], metric: cosine, min_runs: 5, min_seconds: 0, "
        "max_seconds: 0.1}\n"
    )
    result = invoke("run", model, "-c", config, "-o", tmp_path / "out", "--json", "-q")
    assert result.exit_code == 0, result.stderr
    details = json.loads(result.stdout)["stages"][-1]["details"]
    ranking = [n["node"] for n in details["sensitivity"]["nodes"]]
    assert ranking[0] == "b" and set(ranking) == {"a", "b", "c"}
    assert details["attempts"][0]["met"] is False and details["budget_met"] is True
    assert details["eight_bit"] == ["b", "head"] and details["four_bit"] == 2
    written = onnx.load(str(tmp_path / "out" / "model.onnx"))
    assert bits(written) == {"a_Q4": 4, "b_Q8": 8, "c_Q4": 4, "head_Q8": 8}
    record = Int4Details.model_validate(details)
    lines = record.lines()
    assert any("2 MatMul(s) at 4 bits, 2 at 8 bits (b, head)" in line for line in lines)
    assert any("kept 1 node(s) at 8 bits" in line for line in lines)
    table = record.table("cosine")  # what the report draws: the ranking and each one's bits
    assert [row[1] for row in table.rows][0] == "b" and table.rows[0][-1] == "8"
    assert {row[1]: row[-1] for row in table.rows[1:]} == {"a": "4", "c": "4"}
    assert record.budget_miss("quantize.int4", "cosine") is None
    missed = record.model_copy(update={"budget_met": False})
    assert "2 MatMul(s) at 8 bits" in missed.budget_miss("quantize.int4", "cosine").text


def test_k_quant_refuses_a_width_odd_at_every_block_in_one_line(tmp_path):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], "narrow")]
    built = onnx_builders.model(
        nodes,
        [onnx_builders.float_input("x", ["batch", 48])],
        [onnx_builders.float_input("y", ["batch", 8])],
        {"w": rng.normal(size=(48, 8))},  # 3 blocks of 16, the smallest block
    )
    model = onnx_builders.save(built, tmp_path / "narrow.onnx")
    np.savez(tmp_path / "eval.npz", x=rng.normal(size=(8, 48)).astype(np.float32))
    config = tmp_path / "int4.yaml"
    config.write_text(
        "version: 1\ndata: {eval: {path: eval.npz, inputs: [x]}}\n"
        "passes:\n  - {type: quantize.int4, algorithm: k_quant, block_size: 16, head_bits: 4}\n"
        "report: {metric: cosine}\n"
    )
    out = tmp_path / "out"
    result = run_cli(model, config, out, "--quiet")
    assert_refused(result, out, "passes[0].algorithm", "k_quant cannot pack narrow")
