"""quantize.int4's test models (an embedding classifier, a tied LM head), the run of the pass
on one through the CLI, and what the tests read from the model written."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.helpers import onnx_builders
from tests.helpers.cli import invoke

VOCAB, WIDTH, HIDDEN, CLASSES = 200, 64, 64, 8


def embedding_classifier(path, rng: np.random.Generator):
    """ids [batch] -> Gather from a [VOCAB, WIDTH] table -> Gemm + Relu -> Gemm -> logits."""
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["embedded"], "embed"),
        helper.make_node("Gemm", ["embedded", "w1", "b1"], ["h"], "hidden", transB=1),
        helper.make_node("Relu", ["h"], ["a"], "relu"),
        helper.make_node("Gemm", ["a", "w2", "b2"], ["y"], "head", transB=1),
    ]
    built = onnx_builders.model(
        nodes,
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"])],
        [onnx_builders.float_input("y", ["batch", CLASSES])],
        {
            "table": rng.normal(size=(VOCAB, WIDTH)),
            "w1": rng.normal(size=(HIDDEN, WIDTH)) / 8,
            "b1": rng.normal(size=HIDDEN),
            "w2": rng.normal(size=(CLASSES, HIDDEN)) / 8,
            "b2": rng.normal(size=CLASSES),
        },
    )
    return onnx_builders.save(built, path)


def run_int4(tmp_path, entry: str = "{type: quantize.int4}", build=None):
    """`build(path, rng)`'s model (the embedding classifier by default) through quantize.int4
    `entry`: the model written, float and int4 outputs on the ids, and the stage's details."""
    rng = np.random.default_rng(0)
    model = (build or embedding_classifier)(tmp_path / "m.onnx", rng)
    ids = rng.integers(0, VOCAB, size=64)
    np.savez(tmp_path / "eval.npz", ids=ids)
    config = tmp_path / "int4.yaml"
    config.write_text(
        "version: 1\n"
        "data: {eval: {path: eval.npz, inputs: [ids]}}\n"
        f"passes:\n  - {entry}\n"
        "report: {batch_sizes: [4], metric: cosine, min_runs: 5, min_seconds: 0, "
        "max_seconds: 0.1}\n"
    )
    out = tmp_path / "out"
    result = invoke("run", model, "-c", config, "-o", out, "--json", "-q")
    assert result.exit_code == 0, result.stderr
    written = onnx.load(str(out / "model.onnx"))
    float_out = onnx_builders.run(onnx.load(str(model)), {"ids": ids})
    int4_out = onnx_builders.run(written, {"ids": ids})
    details = json.loads(result.stdout)["stages"][-1]["details"]
    return written, float_out, int4_out, details


def tied_head(path, rng: np.random.Generator, width: int = WIDTH, tied: bool = True):
    """ids [batch] -> Gather from a [VOCAB, width] table -> Gemm + Relu -> MatMul with the same
    table, transposed -> logits [batch, VOCAB]: a tied LM head (Qwen2's and GPT-2's, as torch
    exports them). Not `tied`: the lookup reads a table of its own."""
    lookup = "table" if tied else "own_table"
    nodes = [
        helper.make_node("Gather", [lookup, "ids"], ["embedded"], "embed"),
        helper.make_node("Gemm", ["embedded", "w1", "b1"], ["h"], "hidden", transB=1),
        helper.make_node("Relu", ["h"], ["a"], "relu"),
        helper.make_node("Transpose", ["table"], ["table_t"], "tie", perm=[1, 0]),
        helper.make_node("MatMul", ["a", "table_t"], ["logits"], "head"),
    ]
    tables = {"table": rng.normal(size=(VOCAB, width))}
    if not tied:
        tables["own_table"] = rng.normal(size=(VOCAB, width))
    built = onnx_builders.model(
        nodes,
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"])],
        [onnx_builders.float_input("logits", ["batch", VOCAB])],
        {
            **tables,
            "w1": rng.normal(size=(width, width)) / 8,
            "b1": rng.normal(size=width),
        },
    )
    return onnx_builders.save(built, path)


def ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


def int8_tables(model: onnx.ModelProto) -> list[str]:
    return [
        i.name
        for i in model.graph.initializer
        if i.data_type == TensorProto.INT8 and len(i.dims) == 2
    ]


def bits(model: onnx.ModelProto) -> dict[str, int]:
    return {
        n.name: helper.get_attribute_value(next(a for a in n.attribute if a.name == "bits"))
        for n in model.graph.node
        if n.op_type == "MatMulNBits"
    }


def zero_points(model: onnx.ModelProto) -> set[bool]:
    """Whether each MatMulNBits node reads zero points (its fourth input): asymmetric codes."""
    nodes = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    return {len(n.input) > 3 and n.input[3] != "" for n in nodes}
