"""Weights too large for one ONNX file (over 2 GB; here the limit is lowered) are saved in one
data file beside the model, by the export and by quantize.int4, and a run publishes it as
model.onnx.data together with model.onnx: both or neither, the model naming its data."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from compress.models import onnx_files
from tests.helpers.cli import invoke
from tests.helpers.hf_folders import token_arrays

QUICK = (
    "report: {batch_sizes: [1], min_runs: 5, min_seconds: 0, max_seconds: 0.1, warmup_runs: 1}\n"
)


@pytest.fixture
def small_limit(monkeypatch):
    monkeypatch.setattr(onnx_files, "EXTERNAL_BYTES", 1000)


def logits(path, tokens) -> np.ndarray:
    from compress.measure.decoder_feeds import completed_feeds, session_inputs

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    arrays = [tokens["input_ids"], tokens["attention_mask"]]
    return session.run(["logits"], completed_feeds(session_inputs(session), arrays))[0]


def test_a_run_publishes_the_weights_beside_model_onnx(hf_folders, tmp_path, small_limit):
    config = tmp_path / "c.yaml"
    config.write_text("version: 1\npasses: [{type: quantize.int4}]\n" + QUICK)
    out = tmp_path / "out"
    result = invoke("run", hf_folders["llama"], "-c", config, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["model.onnx", "model.onnx.data", "report.html", "report.json", "report.md"]
    model, data = out / "model.onnx", out / "model.onnx.data"
    graph = onnx.load(str(model), load_external_data=False).graph
    inside = [t.name for t in graph.initializer if not t.external_data]
    assert all(
        t.ByteSize() <= onnx_files.SMALL_TENSOR for t in graph.initializer if t.name in inside
    )
    assert data.stat().st_size > 10 * onnx_files.SMALL_TENSOR  # the weights that matter
    assert onnx_files.external_locations(model) == {"model.onnx.data"}
    assert "MatMulNBits" in model.read_bytes().decode("latin-1")  # the int4 stage was published
    tokens = token_arrays(2)
    assert np.isfinite(logits(model, tokens)).all()
    report = json.loads(result.stdout)
    assert report["stages"][-1]["name"] == "quantize.int4"


def test_a_model_that_fits_leaves_no_stale_data_file(hf_folders, tmp_path, monkeypatch):
    out = tmp_path / "out"
    config = tmp_path / "c.yaml"
    config.write_text("version: 1\n" + QUICK)
    monkeypatch.setattr(onnx_files, "EXTERNAL_BYTES", 1000)
    assert invoke("run", hf_folders["gpt2"], "-c", config, "-o", out).exit_code == 0
    assert (out / "model.onnx.data").exists()
    monkeypatch.setattr(onnx_files, "EXTERNAL_BYTES", 1_800_000_000)
    result = invoke("run", hf_folders["gpt2"], "-c", config, "-o", out, "--force")
    assert result.exit_code == 0, result.stderr
    assert not (out / "model.onnx.data").exists()
    assert onnx_files.external_locations(out / "model.onnx") == set()


def test_save_and_replace_keep_the_model_and_its_data_together(tmp_path, small_limit):
    from onnx import helper

    weight = onnx.numpy_helper.from_array(np.arange(600, dtype=np.float32).reshape(20, 30), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 20])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 30])], [weight],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    source, target = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx_files.save_onnx(proto, source)
    assert onnx_files.external_locations(source) == {"a.onnx.data"}
    onnx_files.replace_onnx(source, target)
    assert not source.exists() and not (tmp_path / "a.onnx.data").exists()
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    x = np.ones((1, 20), np.float32)
    assert np.allclose(session.run(None, {"x": x})[0], x @ np.arange(600).reshape(20, 30))
