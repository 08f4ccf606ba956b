"""`compress init`: a commented starter config that validates, with the model's inputs."""

from __future__ import annotations

import json
import shutil

import yaml

from tests.conftest import SAMPLES, invoke, small_onnx


def init(model, path):
    result = invoke("init", model, "-o", path)
    assert result.exit_code == 0, result.stderr
    assert "compress validate" in result.stderr
    return path.read_text()


def test_an_onnx_starter_declares_its_inputs_validates_and_runs(tmp_path):
    model = small_onnx(tmp_path / "linear.onnx")
    config = tmp_path / "linear.yaml"
    text = init(model, config)
    assert text.startswith("# compress recipe for linear.onnx (an ONNX model)")
    loaded = yaml.safe_load(text)
    assert loaded["model"]["inputs"] == [
        {"name": "x", "shape": ["batch", 1, 8, 8], "dtype": "float32"}
    ]
    assert invoke("validate", config).exit_code == 0
    quick = "report={batch_sizes: [4], min_runs: 5, min_seconds: 0, max_seconds: 0.2}"
    smaller = "gates.min_size_ratio=1"  # the starter's 2x is for real models, not a 2 KB one
    result = invoke(
        "run",
        model,
        "-c",
        config,
        "-o",
        tmp_path / "out",
        "--json",
        "--set",
        quick,
        "--set",
        smaller,
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [s["name"] for s in report["stages"]] == ["baseline", "quantize.dynamic"]
    assert report["latency"]["input"] == "model.inputs"


def test_a_pt2_starter_reads_shapes_and_offers_pruning(tmp_path):
    config = tmp_path / "cnn.yaml"
    text = init(SAMPLES / "digits_cnn.pt2", config)
    assert yaml.safe_load(text)["model"]["inputs"][0]["shape"] == ["batch", 1, 8, 8]
    assert "# - type: prune.channels" in text  # a torch.export program can be pruned
    result = invoke("validate", config)
    assert result.exit_code == 0, result.stderr


def test_a_torchscript_starter_names_the_data_to_fill_in(tmp_path):
    config = tmp_path / "text.yaml"
    text = init(SAMPLES / "text_transformer.ts", config)
    assert "# TODO: the model's shapes cannot be read" in text
    assert "prune.channels" not in text  # TorchScript cannot be pruned
    assert yaml.safe_load(text)["data"]["eval"]["inputs"] == ["input_ids", "attention_mask"]
    result = invoke("validate", config)
    assert result.exit_code == 2 and "data.eval.path: npz file not found" in result.stderr
    shutil.copyfile(SAMPLES / "text_eval.npz", tmp_path / "eval.npz")  # the data, filled in
    result = invoke("validate", config)
    assert result.exit_code == 0, result.stderr


def test_a_state_dict_starter_asks_for_the_architecture(tmp_path):
    text = init(SAMPLES / "digits_cnn_state.pt", tmp_path / "s.yaml")
    assert "# TODO: a state_dict holds weights only" in text
    assert yaml.safe_load(text)["model"]["arch"] == "arch.py:Model"


def test_init_prints_without_o_and_refuses_to_overwrite(tmp_path):
    model = small_onnx(tmp_path / "m.onnx")
    printed = invoke("init", model)
    assert printed.exit_code == 0 and printed.stdout.startswith("# compress recipe for m.onnx")
    target = tmp_path / "m.yaml"
    target.write_text("mine\n")
    result = invoke("init", model, "-o", target)
    assert result.exit_code == 2 and "--force" in result.stderr
    assert target.read_text() == "mine\n"
    assert invoke("init", model, "-o", target, "--force").exit_code == 0
    assert target.read_text() == printed.stdout
    result = invoke("init", tmp_path / "absent.pt2")
    assert result.exit_code == 2 and "model file not found" in result.stderr
