"""quantize.auto's candidates, the accuracy-aware fallback's pieces, and the int8 pass options
(the choice among candidates: tests/quant/test_auto_choice.py)."""

import json

import numpy as np
import onnx
import pytest

from compress.measure.runtime import open_session
from compress.quant import int8 as quantize
from compress.quant.auto_candidates import candidates_for
from compress.quant.weight_rewrites import quantize_embeddings
from compress.report import to_markdown
from tests.helpers.cli import invoke
from tests.helpers.configs import write_config
from tests.helpers.paths import SAMPLES


def test_candidates_fit_the_graph(tmp_path):
    from tests.helpers.onnx_builders import small_onnx

    names = [c.name for c in candidates_for(small_onnx(tmp_path / "m.onnx"), True)]
    assert "static-per-channel" in names and "dynamic" not in names  # Gemm only: nothing dynamic
    assert all(
        not n.startswith("static")
        for n in (c.name for c in candidates_for(tmp_path / "m.onnx", has_calibration=False))
    )


def test_depthwise_convolutions_get_a_candidate_that_keeps_them_in_float(tmp_path):
    import torch

    module = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=8),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 64, 10),
    )
    path = tmp_path / "dw.onnx"
    torch.onnx.export(module, (torch.zeros(2, 1, 8, 8),), str(path), dynamo=False)
    [depthwise] = [c for c in candidates_for(path, True) if c.name == "static-depthwise-float"]
    groups = {n.name: n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"}
    assert len(depthwise.float_nodes) == 1
    assert groups[depthwise.float_nodes[0]].attribute[-1] is not None


def test_calibration_samples_limits_what_calibration_reads():
    from compress.quant.calibration import batches
    from compress.quant.recovery import calibration_inputs

    class Ctx:
        calibration = type("D", (), {"inputs": {"x": np.zeros((100, 3), np.float32)}})()
        input_names = ["x"]

    samples = calibration_inputs(Ctx(), limit=40)
    sizes = [len(batch["x"]) for batch in batches(samples, Ctx.input_names, 16, None)]
    assert sizes == [16, 16, 8]
    # a model with a fixed batch of 16 gets the last batch padded with copies of its last sample
    fixed = list(batches(samples, Ctx.input_names, 32, 16))
    assert [len(batch["x"]) for batch in fixed] == [16, 16, 16]
    assert (fixed[-1]["x"][8:] == samples[0][39]).all()


def test_dynamic_per_channel_auto_keeps_the_closer_setting(tmp_path):
    text = (
        "version: 1\n"
        "data:\n"
        "  calibration: {path: text_calib.npz, inputs: [input_ids, attention_mask], limit: 32}\n"
        "  eval: {path: text_eval.npz, inputs: [input_ids, attention_mask], labels: y}\n"
        "passes: [{type: quantize.dynamic, op_types: [MatMul]}]\n"
        "report: {batch_sizes: [4], metric: cosine, min_runs: 5, min_seconds: 0}\n"
    )
    config = write_config(tmp_path, text)
    result = invoke(
        "run", SAMPLES / "text_transformer.ts", "-c", config, "-o", tmp_path / "o", "--json", "-q"
    )
    details = json.loads(result.stdout)["stages"][-1]["details"]
    errors = details["output_error"]
    assert details["per_channel"] == (errors["per_channel"] < errors["per_tensor"])
    # the exported float graph has no value_info, so neither has the int8 one
    assert not onnx.load(str(tmp_path / "o" / "model.onnx")).graph.value_info


def test_embedding_tables_become_int8_and_lookups_still_match(tmp_path):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(20, 16)).astype(np.float32)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Gather", ["table", "ids"], ["out"], "lookup")],
        "g",
        [onnx.helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, [None, 5])],
        [onnx.helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [None, 5, 16])],
        [onnx.numpy_helper.from_array(table, "table")],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    assert quantize_embeddings(model) == ["table"]
    onnx.checker.check_model(model, full_check=True)
    assert "table" not in {i.name for i in model.graph.initializer}  # float table is gone
    path = tmp_path / "e.onnx"
    onnx.save(model, str(path))
    ids = rng.integers(0, 20, size=(3, 5))
    out = open_session(path, 1).run(None, {"ids": ids})[0]
    assert np.abs(out - table[ids]).max() <= np.abs(table).max(axis=0).max() / 127


def test_markdown_lists_the_candidates_auto_tried():
    from compress.quant.auto import AutoDetails
    from compress.report.model import Summary
    from tests.helpers.report_builders import hand_made_report, stage

    details = AutoDetails(
        accuracy_budget=0.01,
        input={"p50_ms": 2.0, "size_bytes": 2000, "metric": 1.0},
        candidates=[
            {
                "name": "dynamic",
                "p50_ms": 1.0,
                "size_bytes": 500,
                "metric": 0.99,
                "drop": 0.01,
                "float_nodes": [],
                "verdict": "chosen",
            },
            {"name": "static-per-channel", "verdict": "failed: boom"},
        ],
        chosen="dynamic",
        reason="chose dynamic",
    )
    summary = Summary(
        size_ratio=4,
        gzip_ratio=5,
        speedup=2,
        speedup_batch=8,
        accuracy_drop=0.01,
        final_size_mb=0.0005,
    )
    stages = [
        stage("baseline", 2000, {"8": 2.0}, 1.0),
        stage("quantize.auto", 500, {"8": 1.0}, 0.99, details=details),
    ]
    report = hand_made_report(stages, summary)
    text = to_markdown(report)
    assert "| dynamic | 1.000 | 0.5 | 0.9900 | 0.0100 | 0 | chosen |" in text
    assert "| static-per-channel | n/a |" in text and "failed: boom" in text
    assert "- quantize.auto: chose dynamic" in text


@pytest.mark.parametrize("per_channel", ["auto", True])
def test_dynamic_per_channel_accepts_auto_and_booleans(per_channel):
    assert quantize.DynamicParams(per_channel=per_channel).per_channel == per_channel


def test_recovery_candidates_fit_the_graph(tmp_path):
    from tests.helpers.onnx_builders import conv_chain, layernorm_graph, save

    rng = np.random.default_rng(0)
    cnn = {c.name: c for c in candidates_for(save(conv_chain(rng), tmp_path / "c.onnx"), True)}
    assert cnn["static-equalized"].settings == {
        "per_channel": False,
        "equalize": True,
        "bias_correction": True,
        "calibration": "auto",
    }
    assert cnn["static-bias-corrected"].settings["bias_correction"]
    assert "static-smoothed" not in cnn
    relu6 = [
        c.name for c in candidates_for(save(conv_chain(rng, "Clip"), tmp_path / "r.onnx"), True)
    ]
    assert "static-equalized" not in relu6 and "static-bias-corrected" in relu6  # CLE skips ReLU6
    text = {
        c.name: c
        for c in candidates_for(save(layernorm_graph(rng, True), tmp_path / "t.onnx"), True)
    }
    assert text["static-smoothed"].settings["smooth_alpha"] == 0.5
    assert text["static-smoothed"].settings["float_outputs"] == ["MatMul", "Gemm"]
    assert "Gather" in text["static-smoothed"].settings["op_types"]  # embedding tables int8
    assert not {"static-equalized", "static-bias-corrected"} & set(text)
    assert not candidates_for(tmp_path / "t.onnx", has_calibration=False)[0].name.startswith(
        "static"
    )
