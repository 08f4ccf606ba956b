"""quantize.int4 on a tied LM head: the table quantized once, at the head's bits, straight from
the [vocab, hidden] table, and read by the head (MatMulNBits) and the lookup
(GatherBlockQuantized) alike; untied heads and float lookups as before."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compress.quant.nbits import WeightPlan
from compress.quant.tied_head import quantize_tied_heads
from compress.report.model import Report
from tests.helpers.cli import invoke
from tests.helpers.int4_models import VOCAB, WIDTH, bits, int8_tables, ops, run_int4, tied_head


def session_outputs(model: onnx.ModelProto, feeds: dict, names: list[str]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(names, feeds)


def head_rows(model: onnx.ModelProto) -> np.ndarray:
    """The head's weights [vocab, hidden] as its MatMulNBits dequantizes them: the node alone
    run on the identity matrix."""
    head = next(n for n in model.graph.node if n.op_type == "MatMulNBits")
    hidden = next(a.i for a in head.attribute if a.name == "K")
    weights = [i for i in model.graph.initializer if i.name in head.input]
    graph = helper.make_graph(
        [head], "head",
        [helper.make_tensor_value_info(head.input[0], TensorProto.FLOAT, [hidden, hidden])],
        [helper.make_tensor_value_info(head.output[0], TensorProto.FLOAT, None)],
        weights,
    )  # fmt: skip
    alone = helper.make_model(graph, opset_imports=list(model.opset_import))
    alone.ir_version = model.ir_version
    eye = np.eye(hidden, dtype=np.float32)
    return session_outputs(alone, {head.input[0]: eye}, [head.output[0]])[0].T


def float_tables(model: onnx.ModelProto) -> list[str]:
    """Float initializers of a table's size (a whole row of floats per token, not the scales)."""
    return [
        i.name
        for i in model.graph.initializer
        if i.data_type == TensorProto.FLOAT and len(i.dims) == 2 and np.prod(i.dims) >= VOCAB * 32
    ]


def table_bytes(model: onnx.ModelProto) -> int:
    """The bytes of the initializers with a row per token (tables, their codes and scales)."""
    return sum(i.ByteSize() for i in model.graph.initializer if i.dims and i.dims[0] == VOCAB)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize(
    ("head_bits", "symmetric", "width"),
    [(8, False, 64), (4, True, 64), (8, True, 40), (4, False, 40)],
)
def test_the_lookup_reads_the_heads_blocks_and_gets_its_rows(tmp_path, head_bits, symmetric, width):
    rng = np.random.default_rng(0)
    model = onnx.load(str(tied_head(tmp_path / "m.onnx", rng, width)))
    table = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "table"))
    algorithm = "rtn_symmetric" if symmetric else "rtn_asymmetric"
    done = quantize_tied_heads(model, WeightPlan(algorithm, block_size=32, bits=head_bits))
    assert [(t.head, t.table, t.lookups, t.bits, t.shared) for t in done] == [
        ("head", "table", ["embed"], head_bits, True)
    ]
    onnx.checker.check_model(model)
    assert float_tables(model) == [] and "Transpose" not in ops(model)  # no float copy left
    head = next(n for n in model.graph.node if n.op_type == "MatMulNBits")
    lookup = next(n for n in model.graph.node if n.op_type == "GatherBlockQuantized")
    reshape = next(n for n in model.graph.node if n.output[0] == lookup.input[0])
    assert reshape.input[0] == head.input[1] and lookup.input[2:] == head.input[2:]
    assert len(head.input) == (3 if symmetric else 4)  # zero points only when asymmetric
    assert ("Slice" in ops(model)) == (width % 32 != 0)  # rows padded to whole blocks
    ids = np.array([0, 5, VOCAB - 1, 5], np.int64)
    model.graph.output.append(helper.make_tensor_value_info("embedded", TensorProto.FLOAT, None))
    embedded = session_outputs(model, {"ids": ids}, ["embedded"])[0]
    rows = head_rows(model)
    assert embedded.shape == (4, width)
    np.testing.assert_allclose(embedded, rows[ids], rtol=0, atol=1e-6)
    step = np.ptp(table, axis=1, keepdims=True) / (2**head_bits - 1)  # one code at most
    assert np.all(np.abs(rows - table) <= step + 1e-6)


def test_a_tied_head_and_its_lookup_share_one_8_bit_copy(tmp_path):
    written, float_out, int4_out, details = run_int4(tmp_path, build=tied_head)
    assert bits(written) == {"hidden_Q4": 4, "head_Q8": 8} and details["eight_bit"] == ["head"]
    assert {"GatherBlockQuantized", "Reshape"} <= ops(written) and "Transpose" not in ops(written)
    assert float_tables(written) == [] and int8_tables(written) == []
    assert table_bytes(written) < 1.25 * VOCAB * WIDTH  # one 8-bit copy, not two
    assert details["tied_tables"] == [
        {"table": "table", "head": "head", "lookups": ["embed"], "bits": 8, "block_size": 64,
         "shared": True}
    ]  # fmt: skip
    assert "tied_weights_copied" not in details and "embedding_tables_int8" not in details
    assert cosines(float_out, int4_out).min() > 0.98
    written_report = json.loads((tmp_path / "out" / "report.json").read_text())
    jsonschema.validate(written_report, json.loads(invoke("schema", "--report").stdout))
    stage = Report.read(written_report).final
    assert stage.details.tied_tables[0].shared  # read back as the typed record
    assert "one copy" in "\n".join(stage.details.lines())


def test_a_4_bit_tied_head_is_shared_at_4_bits(tmp_path):
    entry = "{type: quantize.int4, head_bits: 4, accuracy_level: 0}"
    written, float_out, int4_out, details = run_int4(tmp_path, entry, build=tied_head)
    assert bits(written) == {"hidden_Q4": 4, "head_Q4": 4} and not details.get("eight_bit")
    lookup = next(n for n in written.graph.node if n.op_type == "GatherBlockQuantized")
    assert helper.get_attribute_value(next(a for a in lookup.attribute if a.name == "bits")) == 4
    assert table_bytes(written) < 0.75 * VOCAB * WIDTH  # one 4-bit copy
    assert details["tied_tables"][0]["bits"] == 4 and details["tied_tables"][0]["shared"]
    assert cosines(float_out, int4_out).min() > 0.9


def test_float_embeddings_keep_the_table_for_the_lookup_only(tmp_path):
    """embeddings_int8: false: the lookup reads the float table, the head is still quantized
    from it (no transposed float copy), and nothing is shared."""
    entry = "{type: quantize.int4, embeddings_int8: false, accuracy_level: 0}"
    written, float_out, int4_out, details = run_int4(tmp_path, entry, build=tied_head)
    assert bits(written) == {"hidden_Q4": 4, "head_Q8": 8}
    assert float_tables(written) == ["table"] and "GatherBlockQuantized" not in ops(written)
    assert not details["tied_tables"][0]["shared"] and "tied_weights_copied" not in details
    assert cosines(float_out, int4_out).min() > 0.98


def test_an_untied_head_gets_its_own_copy_and_the_lookup_its_int8_table(tmp_path):
    def untied(path, rng):
        return tied_head(path, rng, tied=False)

    written, float_out, int4_out, details = run_int4(tmp_path, build=untied)
    assert details["tied_weights_copied"] == ["head"] and "tied_tables" not in details
    assert details["embedding_tables_int8"] == ["own_table"]
    assert int8_tables(written) == ["own_table_int8"] and "GatherBlockQuantized" not in ops(written)
    assert bits(written) == {"hidden_Q4": 4, "head_Q8": 8}
    assert cosines(float_out, int4_out).min() > 0.98


def test_a_budget_searches_the_mix_around_the_shared_table(tmp_path):
    entry = "{type: quantize.int4, max_accuracy_drop: 0.5, accuracy_level: 0}"
    written, _, _, details = run_int4(tmp_path, entry, build=tied_head)
    assert details["budget_met"] and details["tied_tables"][0]["shared"]
    assert "GatherBlockQuantized" in ops(written) and float_tables(written) == []
    assert "head" in details["eight_bit"]


def test_a_budget_can_move_a_4_bit_tied_head_to_8_bits(tmp_path):
    """head_bits: 4 with a budget no 4-bit weight meets: the search moves the tied head to 8
    bits too, its table still quantized once and shared."""
    entry = "{type: quantize.int4, head_bits: 4, max_accuracy_drop: 0.0, accuracy_level: 0}"
    written, _, _, details = run_int4(tmp_path, entry, build=tied_head)
    assert "head" in details["eight_bit"] and bits(written)["head_Q8"] == 8
    assert details["tied_tables"][0]["bits"] == 8 and details["tied_tables"][0]["shared"]
    lookup = next(n for n in written.graph.node if n.op_type == "GatherBlockQuantized")
    assert helper.get_attribute_value(next(a for a in lookup.attribute if a.name == "bits")) == 8
    assert float_tables(written) == [] and "Transpose" not in ops(written)


def test_a_tied_gpt2_folder_shares_its_table_and_its_positions_stay_int8(hf_folders, tmp_path):
    """The real export (torch.export of GPT-2, whose head is tied to wte): the head reads wte
    through a Transpose; the position table (wpe), read by no head, is stored as int8."""
    config = tmp_path / "int4.yaml"
    config.write_text(
        "version: 1\npasses: [{type: quantize.int4, accuracy_level: 0}]\n"
        "report: {batch_sizes: [1], min_runs: 5, min_seconds: 0, max_seconds: 0.2}\n"
    )
    out = tmp_path / "out"
    result = invoke("run", hf_folders["gpt2"], "-c", config, "-o", out, "--json", "-q")
    assert result.exit_code == 0, result.stderr
    details = json.loads(result.stdout)["stages"][-1]["details"]
    (tied,) = details["tied_tables"]
    assert tied["shared"] and tied["bits"] == 8 and details["eight_bit"] == [tied["head"]]
    assert len(details["embedding_tables_int8"]) == 1  # wpe
    written = onnx.load(str(out / "model.onnx"))
    assert "GatherBlockQuantized" in ops(written)
    assert tied["table"] not in {i.name for i in written.graph.initializer}


@pytest.mark.parametrize(("offset", "tied"), [(0.0, True), (1e-3, False)])
def test_a_head_weight_folded_from_the_table_is_tied_only_when_equal(offset, tied):
    """The exporter may fold the Transpose into an initializer of its own (GPT-2's small export):
    tied when it holds exactly the table transposed, else left to the MatMul quantizer."""
    rng = np.random.default_rng(0)
    table = rng.normal(size=(VOCAB, WIDTH)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["embedded"], "embed"),
        helper.make_node("MatMul", ["embedded", "weight"], ["logits"], "head"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", VOCAB])],
        [numpy_helper.from_array(table, "table"),
         numpy_helper.from_array(np.ascontiguousarray(table.T) + np.float32(offset), "weight")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    done = quantize_tied_heads(model, WeightPlan("rtn_asymmetric", block_size=32, bits=8))
    assert bool(done) == tied
    names = {i.name for i in model.graph.initializer}
    assert ("weight" in names, "table" in names) == ((False, False) if tied else (True, True))
