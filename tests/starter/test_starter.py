"""`compress init`: a commented starter config that validates, with the model's inputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import yaml

from tests.helpers import onnx_builders
from tests.helpers.cli import invoke
from tests.helpers.onnx_builders import small_onnx
from tests.helpers.paths import SAMPLES


def run_quickly(model, config, out, *overrides: str):
    """`compress run --json` of a starter with brief latency and `overrides` (--set)."""
    quick = "report={batch_sizes: [4], min_runs: 5, min_seconds: 0, max_seconds: 0.2}"
    sets = [arg for text in (quick, *overrides) for arg in ("--set", text)]
    return invoke("run", model, "-c", config, "-o", out, "--json", *sets)


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
    smaller = "gates.min_size_ratio=1"  # the starter's 2x is for real models, not a 2 KB one
    result = run_quickly(model, config, tmp_path / "out", smaller)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [s["name"] for s in report["stages"]] == ["baseline", "quantize.dynamic"]
    assert report["latency"]["input"] == "model.inputs"


def test_a_pt2_starter_reads_shapes_and_offers_pruning(tmp_path):
    config = tmp_path / "cnn.yaml"
    text = init(SAMPLES / "digits_cnn.pt2", config)
    assert yaml.safe_load(text)["model"]["inputs"][0]["shape"] == ["batch", 1, 8, 8]
    assert "# - type: prune.channels" in text  # a torch.export program can be pruned
    assert yaml.safe_load(text)["passes"] == [{"type": "quantize.static", "per_channel": True}]
    result = invoke("validate", config)  # the calibration placeholder is still to fill in
    assert result.exit_code == 2 and "data.calibration.path" in result.stderr
    assert "calib.npz" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_torchscript_starter_names_the_data_to_fill_in(tmp_path):
    config = tmp_path / "text.yaml"
    text = init(SAMPLES / "text_transformer.ts", config)
    assert "# TODO: the model's shapes cannot be read" in text
    assert "prune.channels" not in text  # TorchScript cannot be pruned
    assert yaml.safe_load(text)["data"]["eval"]["inputs"] == ["input_ids", "attention_mask"]
    result = invoke("validate", config)
    assert result.exit_code == 2 and "data.eval.path:" in result.stderr
    assert "eval.npz: not found" in result.stderr
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
    assert result.exit_code == 2 and ": not found" in result.stderr


def small_cnn(path):
    """Three 3x3 convolutions (3 -> 32 -> 64 -> 64 channels): ~56k weights, enough that int8
    shrinks the file more than its quantize nodes add."""
    from onnx import helper

    rng = np.random.default_rng(0)
    widths = [3, 32, 64, 64]
    nodes, weights, previous = [], {}, "x"
    for index, (cin, cout) in enumerate(zip(widths, widths[1:], strict=False)):
        weights[f"w{index}"] = rng.normal(size=(cout, cin, 3, 3)) / (3 * cin**0.5)
        conv = f"c{index}"
        nodes.append(helper.make_node("Conv", [previous, f"w{index}"], [conv], conv, pads=[1] * 4))
        nodes.append(helper.make_node("Relu", [conv], [f"r{index}"], f"relu{index}"))
        previous = f"r{index}"
    nodes[-1].output[0] = "y"
    built = onnx_builders.model(
        nodes,
        [onnx_builders.float_input("x", ["batch", 3, 8, 8])],
        [onnx_builders.float_input("y", ["batch", 64, 8, 8])],
        weights,
    )
    return onnx_builders.save(built, path)


def small_text_model(path):
    """Embedding + two Linear layers over a sequence: matrix products and an embedding table."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(100, 32)
            self.hidden = torch.nn.Linear(32, 64)
            self.out = torch.nn.Linear(64, 32)

        def forward(self, ids):
            return self.out(torch.relu(self.hidden(self.embed(ids))))

    ids = torch.zeros(2, 6, dtype=torch.long)
    axes = {"ids": {0: "batch", 1: "seq"}}
    torch.onnx.export(
        Encoder(), (ids,), str(path), dynamo=False, input_names=["ids"], dynamic_axes=axes
    )
    return path


def test_a_cnn_gets_static_int8_with_a_calibration_placeholder(tmp_path):
    config = tmp_path / "cnn.yaml"
    text = init(small_cnn(tmp_path / "cnn.onnx"), config)
    loaded = yaml.safe_load(text)
    assert loaded["passes"] == [{"type": "quantize.static", "per_channel": True}]
    assert loaded["data"]["calibration"]["path"] == "calib.npz"
    assert "100% of the MACs in convolutions" in text
    assert "# TODO: static int8 calibrates on real samples" in text
    assert "quantize.fp16" in text  # what can be done without data
    result = invoke("validate", config)
    assert result.exit_code == 2 and "data.calibration.path" in result.stderr


def test_a_transformer_like_model_gets_dynamic_int8_without_data(tmp_path):
    config = tmp_path / "text.yaml"
    text = init(small_text_model(tmp_path / "text.onnx"), config)
    loaded = yaml.safe_load(text)
    assert loaded["passes"] == [{"type": "quantize.dynamic"}]
    assert "data" not in loaded and "0% of the MACs in convolutions" in text
    assert "of the weights in embedding tables" in text
    assert invoke("validate", config).exit_code == 0


def test_init_data_fills_the_data_sections_and_the_starter_runs(tmp_path):
    model = small_cnn(tmp_path / "cnn.onnx")
    rng = np.random.default_rng(1)
    samples = rng.normal(size=(16, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "samples.npz", images=samples, y=rng.integers(0, 4, 16))
    config = tmp_path / "cnn.yaml"
    result = invoke("init", model, "--data", tmp_path / "samples.npz", "-o", config)
    assert result.exit_code == 0, result.stderr
    data = yaml.safe_load(config.read_text())["data"]
    # the one array feeds the one input, whatever its key; y is found as labels
    assert data["calibration"] == {"path": "samples.npz", "inputs": ["images"], "limit": 256}
    assert data["eval"] == {"path": "samples.npz", "inputs": ["images"], "labels": "y"}
    result = run_quickly(model, config, tmp_path / "out", "report.metric=cosine")
    assert result.exit_code == 0, result.stderr
    assert [s["name"] for s in json.loads(result.stdout)["stages"]] == [
        "baseline",
        "quantize.static",
    ]


def test_init_data_that_does_not_fit_is_refused_and_nothing_written(tmp_path):
    model = small_cnn(tmp_path / "cnn.onnx")
    config = tmp_path / "cnn.yaml"
    result = invoke("init", model, "--data", tmp_path / "absent.npz", "-o", config)
    assert result.exit_code == 2 and "--data" in result.stderr and "not found" in result.stderr
    two = np.zeros((4, 3, 8, 8), np.float32)
    np.savez(tmp_path / "two.npz", a=two, b=two)
    result = invoke("init", model, "--data", tmp_path / "two.npz", "-o", config)
    assert result.exit_code == 2 and "takes 1 input(s) (x) but the file has 2" in result.stderr
    np.savez(tmp_path / "wrong.npz", x=np.zeros((4, 2, 8, 8), np.float32))  # 2 channels, not 3
    result = invoke("init", model, "--data", tmp_path / "wrong.npz", "-o", config)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --data") and "has shape [4, 2, 8, 8]" in lines[0]
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.onnx", "two.npz", "wrong.npz"]


def test_init_data_takes_an_image_folder_sized_from_the_model(tmp_path):
    from PIL import Image

    model = small_cnn(tmp_path / "cnn.onnx")
    rng = np.random.default_rng(2)
    for label in ("cats", "dogs"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / label / f"{i}.png")
    config = tmp_path / "cnn.yaml"
    result = invoke("init", model, "--data", tmp_path / "images", "-o", config)
    assert result.exit_code == 0, result.stderr
    loaded = yaml.safe_load(config.read_text())
    assert loaded["data"]["eval"] == {
        "path": "images",
        "inputs": ["x"],
        "image": {"size": [8, 8], "channels": 3},
    }
    assert loaded["report"]["metric"] == "top1"  # class folders are labels
    assert invoke("validate", config).exit_code == 0


def test_init_data_takes_a_csv_with_a_label_column(tmp_path):
    import torch

    model = tmp_path / "table.onnx"
    torch.onnx.export(
        torch.nn.Linear(3, 2),
        (torch.zeros(2, 3),),
        str(model),
        dynamo=False,
        input_names=["features"],
        dynamic_axes={"features": {0: "batch"}},
    )
    (tmp_path / "rows.csv").write_text("a,b,c,label\n1,2,3,0\n4,5,6,1\n7,8,9,1\n")
    config = tmp_path / "table.yaml"
    result = invoke("init", model, "--data", tmp_path / "rows.csv", "-o", config)
    assert result.exit_code == 0, result.stderr
    eval_source = yaml.safe_load(config.read_text())["data"]["eval"]
    assert eval_source == {
        "path": "rows.csv",
        "inputs": ["features"],
        "columns": ["a", "b", "c"],
        "labels": "label",
    }
    assert invoke("validate", config).exit_code == 0


def test_init_data_for_a_state_dict_reads_the_data_only(tmp_path):
    # its arch is still a TODO, so the model cannot run yet; the data is read and used
    shutil.copyfile(SAMPLES / "digits_calib.npz", tmp_path / "digits.npz")
    config = tmp_path / "s.yaml"
    result = invoke(
        "init", SAMPLES / "digits_cnn_state.pt", "--data", tmp_path / "digits.npz", "-o", config
    )
    assert result.exit_code == 0, result.stderr
    loaded = yaml.safe_load(config.read_text())
    assert loaded["data"]["eval"] == {"path": "digits.npz", "inputs": ["x"], "labels": "y"}
    assert loaded["passes"][0]["type"] == "quantize.static"  # convolutions, judged by weights
