"""Rankings, report lines and `exclude` name the torch module a node came from."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import helper

from compress.errors import ConfigError
from compress.quant.module_names import module_of, resolve_exclude, shown
from tests.helpers.attention_models import saved_model, tokens
from tests.helpers.cli import invoke

WRAPPERS = "'compress.torch.outputs.TensorOutputs', 'compress.models.hf_module.FolderModule'"


def node(name: str, op: str, scopes: str | None, classes: str = "") -> onnx.NodeProto:
    made = helper.make_node(op, ["a", "b"], [f"{name}_out"], name)
    if scopes is not None:
        for key, value in (("name_scopes", scopes), ("class_hierarchy", classes)):
            prop = made.metadata_props.add()
            prop.key, prop.value = f"pkg.torch.onnx.{key}", value
    return made


def test_the_module_is_named_as_the_users_model_names_it():
    wrapped = node(
        "node_MatMul_133",
        "MatMul",
        "['', 'model', 'model.model', 'model.model.encoder', 'model.model.encoder.dense', 'lin']",
        f"[{WRAPPERS}, 'BertModel', 'BertEncoder', 'Linear', 'aten.linear.default']",
    )
    assert module_of(wrapped) == "encoder.dense"  # compress's two wrappers stripped
    plain = node("n", "Conv", "['', 'blocks', 'blocks.15', 'blocks.15.conv_pwl', 'conv2d']")
    assert module_of(plain) == "blocks.15.conv_pwl"
    at_root = node("r", "Add", "['', 'model', 'model.model', 'add']", f"[{WRAPPERS}, 'M', 'add']")
    assert module_of(at_root) is None and module_of(node("x", "Add", None)) is None


def graph():
    nodes = [
        node("q0", "MatMul", None),
        node("f0", "MatMul", None),
        node("f1", "MatMul", None),
        node("norm", "LayerNormalization", None),
    ]
    modules = {"q0": "layers.0.attention.query", "f0": "layers.0.ffn.0", "f1": "layers.1.ffn.0"}
    return helper.make_graph(nodes, "g", [], []), modules


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (["q0"], ["q0"]),  # a node name
        (["LayerNormalization"], ["norm"]),  # an op type
        (["layers.0.ffn.0"], ["f0"]),  # a module
        (["layers.0"], ["q0", "f0"]),  # a module takes its submodules' nodes
        (["layers.*.ffn.*"], ["f0", "f1"]),  # a glob over module names
        (["f*", "layers.1"], ["f0", "f1"]),  # a glob over node names; overlaps counted once
    ],
)
def test_exclude_takes_nodes_op_types_modules_and_globs(entries, expected):
    built, modules = graph()
    assert resolve_exclude(built, entries, "passes[0]", modules) == expected


def test_an_exclude_entry_that_matches_nothing_is_named():
    built, modules = graph()
    with pytest.raises(ConfigError, match=r"passes\[2\]\.exclude: 'layers\.9\.\*' matches no"):
        resolve_exclude(built, ["layers.0", "layers.9.*"], "passes[2]", modules)
    with pytest.raises(ConfigError, match="close names: layers.0.ffn.0"):
        resolve_exclude(built, ["layers.0.fn.0"], "passes[2]", modules)


def test_a_module_that_wrote_several_named_nodes_shows_the_node_too():
    modules = {"a": "attn", "b": "attn", "c": "ffn"}
    assert [shown(n, modules) for n in ("a", "c", "z")] == ["attn (a)", "ffn", "z"]


def encoder_run(tmp_path, entry: str):
    model = saved_model(tmp_path, False, program=True)
    tokens(tmp_path)
    config = tmp_path / "int4.yaml"
    config.write_text(
        "version: 1\ndata: {eval: {path: tokens.npz, inputs: [input_ids, attention_mask]}}\n"
        f"passes:\n  - {entry}\n"
        "report: {batch_sizes: [2], metric: cosine, min_runs: 5, min_seconds: 0, "
        "max_seconds: 0.1}\n"
    )
    return invoke("run", model, "-c", config, "-o", tmp_path / "out", "--json", "-q")


def test_an_exported_encoder_is_ranked_and_excluded_by_module(tmp_path):
    entry = (
        "{type: quantize.int4, accuracy_level: 0, max_accuracy_drop: 0.0, max_fallback_steps: 1,"
        " block_size: 16, exclude: ['layers.1.ffn.*']}"
    )
    result = encoder_run(tmp_path, entry)
    assert result.exit_code == 0, result.stderr
    details = json.loads(result.stdout)["stages"][-1]["details"]
    ranked = [n["module"] for n in details["sensitivity"]["nodes"]]
    assert ranked and all(m.startswith("layers.") for m in ranked)
    assert not any(m.startswith("layers.1.ffn") for m in ranked)  # excluded: float
    assert "layers.0.ffn.0" in ranked and "layers.1.attention.query" in ranked
    head = [n for n, m in details["modules"].items() if m == "classifier"]
    assert head and head[0] in details["eight_bit"]  # the head (a Gemm before), at 8 bits
    written = onnx.load(str(tmp_path / "out" / "model.onnx"))
    float_matmuls = [n for n in written.graph.node if n.op_type == "MatMul"]
    assert {module_of(n) for n in float_matmuls} >= {"layers.1.ffn.0", "layers.1.ffn.2"}


def test_an_exclude_glob_that_matches_no_module_is_refused(tmp_path):
    result = encoder_run(tmp_path, "{type: quantize.int4, exclude: ['layers.9.*']}")
    assert result.exit_code == 2
    assert "passes[0].exclude: 'layers.9.*' matches no node" in result.stderr
    assert "Traceback" not in result.stderr
