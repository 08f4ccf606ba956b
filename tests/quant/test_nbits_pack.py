"""compress.quant.nbits_pack: sibling MatMulNBits packed into one, with the same outputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from compress.quant.nbits import WeightPlan, quantize_weights
from compress.quant.nbits_pack import pack_siblings
from tests.helpers import onnx_builders

WIDTH = 64


def projections(rng: np.random.Generator) -> onnx.ModelProto:
    """x -> q, k, v (three MatMuls reading x) -> q + k + v -> up (reading the sum) -> y, and an
    output per projection, so each one's values are compared."""
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], "q_proj"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], "k_proj"),
        helper.make_node("MatMul", ["x", "wv"], ["v"], "v_proj"),
        helper.make_node("Concat", ["q", "k", "v"], ["qkv"], "concat", axis=-1),
        helper.make_node("MatMul", ["qkv", "wo"], ["y"], "out_proj"),
    ]
    outputs = [
        onnx_builders.float_input(name, ["batch", width])
        for name, width in (("y", 16), ("q", 48), ("k", 16), ("v", 32))
    ]
    return onnx_builders.model(
        nodes,
        [onnx_builders.float_input("x", ["batch", WIDTH])],
        outputs,
        {
            "wq": rng.normal(size=(WIDTH, 48)),
            "wk": rng.uniform(0.0, 1.0, size=(WIDTH, 16)),
            "wv": rng.normal(size=(WIDTH, 32)),
            "wo": rng.normal(size=(96, 16)),
        },
    )


def outputs(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y", "q", "k", "v"], {"x": x})


@pytest.mark.parametrize("algorithm", ["rtn_symmetric", "rtn_asymmetric"])
@pytest.mark.parametrize("level", [0, 4])
def test_siblings_become_one_matmul_with_the_same_outputs(algorithm, level):
    plan = WeightPlan(algorithm, block_size=32, accuracy_level=level)
    quantized = quantize_weights(projections(np.random.default_rng(0)), plan)
    x = np.random.default_rng(1).normal(size=(3, WIDTH)).astype(np.float32)
    before = outputs(quantized, x)
    weights_before = sum(onnx.numpy_helper.to_array(i).size for i in quantized.graph.initializer)

    packed = pack_siblings(quantized)

    assert [(g.matmuls, g.columns) for g in packed] == [
        (["q_proj_Q4", "k_proj_Q4", "v_proj_Q4"], [48, 16, 32])
    ]
    onnx.checker.check_model(quantized)
    ops = [n.op_type for n in quantized.graph.node]
    assert ops.count("MatMulNBits") == 2 and ops.count("Split") == 1  # out_proj stays alone
    for got, expected in zip(outputs(quantized, x), before, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)  # equal here
    # the same codes, scales and zero points, only laid side by side (plus the Split's sizes)
    weights_after = sum(onnx.numpy_helper.to_array(i).size for i in quantized.graph.initializer)
    assert weights_after == weights_before + 3


def test_siblings_at_other_bits_or_sharing_a_weight_stay_apart():
    model = projections(np.random.default_rng(0))
    plan = WeightPlan("rtn_symmetric", block_size=32, eight_bit=frozenset({"k_proj"}))
    quantized = quantize_weights(model, plan)
    # a lookup reading v's blocks, as a tied head's GatherBlockQuantized does
    v = next(n for n in quantized.graph.node if n.name == "v_proj_Q4")
    quantized.graph.node.append(helper.make_node("Identity", [v.input[1]], ["shared"], "lookup"))

    assert pack_siblings(quantized) == []  # q alone at 4 bits, k at 8, v's blocks shared
    assert [n.op_type for n in quantized.graph.node].count("MatMulNBits") == 4


def biased_projections(rng: np.random.Generator) -> onnx.ModelProto:
    """`projections` with a bias added to each MatMul's output (as Qwen2's query, key and value
    export), and q's bias read once more by an Identity."""
    nodes = []
    for name in ("q", "k", "v"):
        nodes.append(helper.make_node("MatMul", ["x", f"w{name}"], [f"{name}0"], f"{name}_proj"))
        nodes.append(helper.make_node("Add", [f"{name}0", f"b{name}"], [name], f"{name}_bias"))
    nodes += [
        helper.make_node("Concat", ["q", "k", "v"], ["qkv"], "concat", axis=-1),
        helper.make_node("MatMul", ["qkv", "wo"], ["y0"], "out_proj"),
        helper.make_node("Add", ["by", "y0"], ["y"], "out_bias"),  # the bias first
        helper.make_node("Identity", ["bq"], ["bq_read"], "reads_bq"),
    ]
    widths = (("y", 16), ("q", 48), ("k", 16), ("v", 32))
    weights = {
        "wq": rng.normal(size=(WIDTH, 48)), "wk": rng.normal(size=(WIDTH, 16)),
        "wv": rng.normal(size=(WIDTH, 32)), "wo": rng.normal(size=(96, 16)),
        "bq": rng.normal(size=48), "bk": rng.normal(size=16), "bv": rng.normal(size=32),
        "by": rng.normal(size=16),
    }  # fmt: skip
    return onnx_builders.model(
        nodes,
        [onnx_builders.float_input("x", ["batch", WIDTH])],
        [
            *[onnx_builders.float_input(name, ["batch", width]) for name, width in widths],
            onnx_builders.float_input("bq_read", [48]),
        ],
        weights,
    )


def test_biases_fold_into_the_matmuls_and_pack_side_by_side():
    """Add(MatMulNBits, b) becomes the node's own bias; the packed node adds the three side by
    side, and a bias another node also reads stays for it."""
    rng = np.random.default_rng(0)
    quantized = quantize_weights(biased_projections(rng), WeightPlan("rtn_symmetric", 32))
    x = rng.normal(size=(3, WIDTH)).astype(np.float32)
    before = outputs(quantized, x)

    packed = pack_siblings(quantized)

    assert [g.columns for g in packed] == [[48, 16, 32]]
    onnx.checker.check_model(quantized)
    ops = [n.op_type for n in quantized.graph.node]
    assert ops.count("Add") == 0 and ops.count("MatMulNBits") == 2  # y's bias folded too
    matmul = next(n for n in quantized.graph.node if n.name.endswith("_packed"))
    assert len(matmul.input) == 6 and matmul.input[3] == matmul.input[4] == ""
    assert "bq" in {i.name for i in quantized.graph.initializer}  # still read by the Identity
    for got, expected in zip(outputs(quantized, x), before, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_a_decoders_packed_projections_feed_its_attention_with_the_same_logits(
    hf_folders, tmp_path
):
    """On a decoder whose GroupQueryAttention rotates its queries and keys itself (Qwen2, with
    query/key/value biases), the packed projection is the attention's packed QKV input: no
    Split, no bias Add; the logits are the unpacked model's, on rows padded on either side."""
    from compress.config import ExportSection, ModelSection
    from compress.measure.decoder_feeds import completed_feeds, session_inputs
    from compress.models import load_model
    from compress.torch import export
    from tests.helpers.hf_folders import token_arrays

    folder = hf_folders["qwen2"]
    module = load_model(folder, ModelSection(), folder.parent).model
    tokens = token_arrays(3)
    path = tmp_path / "qwen2.onnx"
    arrays = [tokens["input_ids"], tokens["attention_mask"]]
    export.export_to_onnx(module, "hf_folder", arrays, [], [], path, ExportSection())
    unpacked = quantize_weights(onnx.load(str(path)), WeightPlan("rtn_symmetric", 32))
    packed = onnx.ModelProto()
    packed.CopyFrom(unpacked)

    groups = pack_siblings(packed)

    assert [len(g.matmuls) for g in groups] == [3, 2, 3, 2]  # q/k/v and gate/up, per layer
    producers = {o: n for n in packed.graph.node for o in n.output}
    attention = [n for n in packed.graph.node if n.op_type == "GroupQueryAttention"]
    assert len(attention) == 2
    for node in attention:
        assert producers[node.input[0]].op_type == "MatMulNBits"  # packed QKV
        assert node.input[1] == node.input[2] == ""
    ops = [n.op_type for n in packed.graph.node]
    assert ops.count("Split") == 2  # the gate/up ones only
    assert not any(
        producers.get(i, onnx.NodeProto()).op_type == "MatMulNBits"
        for n in packed.graph.node
        if n.op_type == "Add"
        for i in n.input
    )
    import onnxruntime as ort

    ids = np.random.default_rng(3).integers(5, 100, (3, 9)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[0, :3] = mask[2, 6:] = 0
    got = []
    for model in (unpacked, packed):
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        got.append(
            session.run(["logits"], completed_feeds(session_inputs(session), [ids, mask]))[0]
        )
    real = mask == 1
    np.testing.assert_allclose(got[1][real], got[0][real], rtol=1e-4, atol=1e-4)


def test_a_bias_folds_where_nothing_is_packed(tmp_path):
    """A lone MatMul with its bias (GPT-2's projections): nothing to pack, the Add still goes
    into the MatMulNBits, and the file is rewritten."""
    from compress.models.onnx_files import save_onnx
    from compress.quant.nbits_pack import pack

    rng = np.random.default_rng(0)
    model = onnx_builders.model(
        [
            helper.make_node("MatMul", ["x", "w"], ["y0"], "proj"),
            helper.make_node("Add", ["y0", "b"], ["y"], "proj_bias"),
        ],
        [onnx_builders.float_input("x", ["batch", WIDTH])],
        [onnx_builders.float_input("y", ["batch", 16])],
        {"w": rng.normal(size=(WIDTH, 16)), "b": rng.normal(size=16)},
    )
    path = tmp_path / "m.onnx"
    save_onnx(quantize_weights(model, WeightPlan("rtn_symmetric", 32)), path)

    assert pack(path) == []

    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops == ["MatMulNBits"]
