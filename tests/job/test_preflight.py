"""The start of a run refuses a model and config that do not fit together, by name, exit 2."""

from __future__ import annotations

import pytest

from tests.helpers.cli import assert_refused, invoke, run_cli
from tests.helpers.onnx_builders import small_onnx
from tests.helpers.paths import SAMPLES

REPORT = (
    "report: {batch_sizes: [2], min_runs: 5, min_seconds: 0, max_seconds: 0.2, warmup_runs: 1}\n"
)


@pytest.mark.parametrize(
    ("inputs", "needles"),
    [
        ("[{name: y, shape: [batch, 64]}]", ["model.inputs does not fit", "Invalid rank"]),
        (
            "[{name: x, shape: [batch, 1, 8, 8]}, {name: z, shape: [batch, 3]}]",
            ["model.inputs does not fit", "z [3]"],
        ),
        ("[{name: x, shape: [batch, 1, 8, 8], dtype: int64}]", ["int64", "does not fit"]),
    ],
    ids=["rank", "count", "dtype"],
)
def test_declared_inputs_that_an_onnx_graph_contradicts(tmp_path, inputs, needles):
    config = tmp_path / "config.yaml"
    config.write_text(f"version: 1\nmodel: {{inputs: {inputs}}}\n{REPORT}")
    out = tmp_path / "out"
    result = run_cli(small_onnx(tmp_path / "model.onnx"), config, out)
    assert_refused(result, out, *needles)


@pytest.mark.parametrize(
    ("shape", "needle"),
    [
        ("[batch, 1, 0, 8]", "a fixed dimension is at least 1"),
        ("[batch, 1, 80000, 80000]", "one sample of shape"),
    ],
)
def test_declared_shapes_out_of_range_are_refused_by_validate_too(tmp_path, shape, needle):
    config = tmp_path / "config.yaml"
    config.write_text(f"version: 1\nmodel: {{inputs: [{{name: x, shape: {shape}}}]}}\n{REPORT}")
    out = tmp_path / "out"
    assert_refused(run_cli(SAMPLES / "digits_cnn.pt2", config, out), out, needle)
    result = invoke("validate", config)
    assert result.exit_code == 2 and needle in result.stderr


def test_a_report_nested_too_deeply_is_refused(tmp_path):
    report = tmp_path / "report.json"
    report.write_text("[" * 100_000 + "]" * 100_000)
    result = invoke("report", report)
    assert result.exit_code == 2 and "nested too deeply" in result.stderr


@pytest.mark.parametrize("model", ["onnx", "pt2"])
def test_without_data_or_model_inputs_the_model_declares_its_inputs(tmp_path, model):
    """An ONNX graph and a .pt2 program record their inputs: samples shaped like them stand
    in for data; a TorchScript archive records no shapes, and the refusal says what to add."""
    import json

    config = tmp_path / "config.yaml"
    config.write_text(f"version: 1\npasses: [{{type: quantize.fp16}}]\n{REPORT}")
    path = small_onnx(tmp_path / "model.onnx") if model == "onnx" else SAMPLES / "digits_cnn.pt2"
    out = tmp_path / "out"
    result = run_cli(path, config, out)
    assert result.exit_code == 0, result.stderr
    assert "samples shaped like the model's inputs stand in (x ['batch', 1, 8, 8]" in result.stderr
    assert json.loads((out / "report.json").read_text())["stages"][-1]["name"] == "quantize.fp16"
    out = tmp_path / "ts"
    result = run_cli(SAMPLES / "digits_cnn.ts", config, out)
    assert_refused(result, out, "the model's inputs are unknown", "model.inputs")
