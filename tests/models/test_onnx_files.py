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
from tests.helpers.int4_models import zero_points

QUICK = (
    "report: {batch_sizes: [1], min_runs: 5, min_seconds: 0, max_seconds: 0.1, warmup_runs: 1}\n"
)


@pytest.fixture
def small_limit(monkeypatch):
    """EXTERNAL_BYTES lowered to 1000, and onnx's save refusing, as protobuf does past 2 GiB,
    a model whose weights pass it with a tensor past SMALL_TENSOR kept inside the file."""
    monkeypatch.setattr(onnx_files, "EXTERNAL_BYTES", 1000)
    save = onnx.save_model

    def save_within_the_limit(proto, path, *args, save_as_external_data=False, **options):
        if isinstance(proto, onnx.ModelProto) and not save_as_external_data:
            tensors = proto.graph.initializer
            inside = [t.ByteSize() for t in tensors if not t.external_data]
            if onnx_files.weight_bytes(proto) > onnx_files.EXTERNAL_BYTES and any(
                size > onnx_files.SMALL_TENSOR for size in inside
            ):
                raise ValueError("the model is larger than protobuf's limit (2 GiB)")
        save(proto, path, *args, save_as_external_data=save_as_external_data, **options)

    monkeypatch.setattr(onnx, "save_model", save_within_the_limit)
    monkeypatch.setattr(onnx, "save", save_within_the_limit)


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
    # algorithm: auto on a decoder with its cache: symmetric (no zero points to correct for in
    # its decode steps)
    assert report["stages"][-1]["details"]["algorithm"] == "rtn_symmetric"
    assert zero_points(onnx.load(str(model), load_external_data=False)) == {False}
    # each layer's query, key and value, and its gate and up, read as one MatMulNBits each
    packed = [group["matmuls"] for group in report["stages"][-1]["details"]["packed"]]
    assert packed == [
        [f"model.layers.{layer}.{part}.{name}_proj" for name in names]
        for layer in range(2)
        for part, names in (("self_attn", "qkv"), ("mlp", ("gate", "up")))
    ]


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


@pytest.mark.parametrize(
    "passes", ["[{type: quantize.dynamic}]", "[{type: quantize.static, calibration: auto}]"]
)
def test_the_int8_passes_keep_a_model_with_a_data_file_in_one(tmp_path, small_limit, passes):
    """ONNX Runtime's pre-processing, calibration and quantizers are asked to write external
    data when their input has it: a model past 2 GB cannot be serialized in one protobuf."""
    from tests.helpers.configs import CNN_CONFIG, write_config
    from tests.helpers.paths import SAMPLES

    text = CNN_CONFIG.replace("  - type: quantize.static\n    per_channel: true\n", "")
    config = write_config(tmp_path, text.replace("passes:\n", f"passes: {passes}\n"))
    out = tmp_path / "out"
    result = invoke("run", SAMPLES / "digits_cnn.pt2", "-c", config, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir())[:2] == ["model.onnx", "model.onnx.data"]
    assert onnx_files.external_locations(out / "model.onnx") == {"model.onnx.data"}
    assert "QuantizeLinear" in (out / "model.onnx").read_bytes().decode("latin-1")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.load(tmp_path / "digits_eval.npz")["x"][:2].astype(np.float32)
    assert np.isfinite(session.run(None, {session.get_inputs()[0].name: x})[0]).all()
