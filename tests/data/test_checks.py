"""Bad values in data files: refused by name (file, key, sample), exit 2, before any work."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from tests.helpers.cli import assert_refused, invoke, run_cli
from tests.helpers.configs import CNN_CONFIG
from tests.helpers.onnx_builders import small_onnx
from tests.helpers.paths import SAMPLES

CNN = SAMPLES / "digits_cnn.pt2"


def eval_with(folder, **arrays) -> None:
    """Overwrite the config's data.eval with the sample eval set, changed by `arrays`."""
    with np.load(SAMPLES / "digits_eval.npz") as npz:
        data = {"x": npz["x"], "y": npz["y"], **arrays}
    np.savez(folder / "digits_eval.npz", **data)


def labels_with(value, at: int = 3, dtype=None) -> np.ndarray:
    with np.load(SAMPLES / "digits_eval.npz") as npz:
        labels = npz["y"].astype(dtype or npz["y"].dtype)
    labels[at] = value
    return labels


@pytest.mark.parametrize(
    ("labels", "needles"),
    [
        (labels_with(99), ["sample 3 has label 99", "10 outputs"]),
        (labels_with(-1), ["holds -1 at sample 3", ">= 0"]),
        (labels_with(np.nan, dtype=np.float32), ["holds nan at sample 3"]),
        (labels_with(2.5, dtype=np.float64), ["holds 2.5 at sample 3", "whole class"]),
        (labels_with(1).astype(str), ["<U", "integer class indexes"]),
        (np.stack([labels_with(1)] * 2, axis=1), ["has shape [397, 2]", "argmax"]),
    ],
    ids=["beyond-outputs", "negative", "nan", "fraction", "strings", "two-d"],
)
def test_bad_labels_are_refused(tmp_path, cnn_config, labels, needles):
    eval_with(tmp_path, y=labels)
    out = tmp_path / "out"
    assert_refused(run_cli(CNN, cnn_config, out), out, "data.eval.labels", *needles)


def test_labels_beyond_an_onnx_models_outputs_are_refused(tmp_path, cnn_config):
    eval_with(tmp_path, y=labels_with(10))
    out = tmp_path / "out"
    model = small_onnx(tmp_path / "model.onnx")
    cnn_config.write_text(CNN_CONFIG.replace("quantize.static", "quantize.dynamic"))
    assert_refused(run_cli(model, cnn_config, out), out, "label 10", "10 outputs")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_refused_by_position(tmp_path, cnn_config, value):
    with np.load(SAMPLES / "digits_eval.npz") as npz:
        x = npz["x"].copy()
    x[5, 0, 3, 4] = value
    eval_with(tmp_path, x=x)
    out = tmp_path / "out"
    assert_refused(
        run_cli(CNN, cnn_config, out), out, "'x' in digits_eval.npz", "sample 5, index [0, 3, 4]"
    )


def test_validate_finds_bad_values_without_the_model(tmp_path, cnn_config):
    eval_with(tmp_path, y=labels_with(-4))
    result = invoke("validate", cnn_config)
    assert result.exit_code == 2 and "holds -4 at sample 3" in result.stderr


def csv_config(tmp_path, rows: list[str]):
    (tmp_path / "eval.csv").write_text("\n".join(["a,b,y", *rows]) + "\n")
    config = tmp_path / "csv.yaml"
    config.write_text(
        "version: 1\n"
        "data:\n  eval: {path: eval.csv, inputs: [x], labels: y}\n"
        "report: {batch_sizes: [2]}\n"
    )
    return config


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        (["1,2,0", "3,4,²"], "'²' among numeric labels"),
        (["1,2,0", "3,4,cat"], "'cat' among numeric labels"),
        (["1,2,0", "3,4,99999999999999999999999"], "among numeric labels"),
        (["1,2,0", "1e999,4,1"], "holds inf at sample 1"),
    ],
)
def test_csv_values_that_are_not_what_they_look_like(tmp_path, rows, needle):
    result = invoke("validate", csv_config(tmp_path, rows))
    assert result.exit_code == 2, result.stderr
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` pixels: what a decoder reads before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def images_config(tmp_path, size="[8, 8]"):
    (tmp_path / "images" / "zero").mkdir(parents=True)
    config = tmp_path / "images.yaml"
    config.write_text(
        "version: 1\n"
        f"data:\n  eval: {{path: images, inputs: [x], image: {{size: {size}, channels: 1}}}}\n"
    )
    return config


@pytest.mark.parametrize(("width", "height"), [(20000, 20000), (400000, 1000)])
def test_images_past_the_pixel_limit_are_refused_before_decoding(tmp_path, width, height):
    config = images_config(tmp_path)
    huge = tmp_path / "images" / "zero" / "huge.png"
    huge.write_bytes(png_header(width, height))
    result = invoke("validate", config)
    assert result.exit_code == 2, result.stderr
    assert "huge.png" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_malformed_image_is_named(tmp_path):
    config = images_config(tmp_path)
    (tmp_path / "images" / "zero" / "bad.png").write_bytes(png_header(8, 8)[:40])
    result = invoke("validate", config)
    assert result.exit_code == 2 and "bad.png" in result.stderr, result.stderr


@pytest.mark.parametrize("size", ["[0, 8]", "[8, -1]", "[100000, 8]"])
def test_image_sizes_out_of_range_are_refused(tmp_path, size):
    result = invoke("validate", images_config(tmp_path, size))
    assert result.exit_code == 2 and "image.size" in result.stderr, result.stderr


def test_a_latency_batch_the_machine_cannot_hold_is_refused(tmp_path, cnn_config):
    out = tmp_path / "out"
    result = run_cli(CNN, cnn_config, out, "--set", "report.batch_sizes=[1000000]", "--quiet")
    assert_refused(result, out, "report.batch_sizes: a batch of 1000000 needs about")


def test_an_onnx_graph_that_contradicts_itself_is_bad_input(tmp_path, cnn_config):
    import onnx
    from onnx import TensorProto, helper

    weight = onnx.numpy_helper.from_array(np.ones((1, 64), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", 64])],  # float is added
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
        [weight],
    )
    model = tmp_path / "contradicts.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), model)
    cnn_config.write_text("version: 1\nmodel: {inputs: [{name: x, shape: [batch, 64]}]}\n")
    out = tmp_path / "out"
    assert_refused(run_cli(model, cnn_config, out), out, "contradicts.onnx", "ONNX Runtime")
