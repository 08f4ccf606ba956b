"""Every kind of bad input: exit 2, one line that names the problem, nothing written."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from tests.helpers.cli import assert_refused, invoke, run_cli
from tests.helpers.configs import CNN_CONFIG, STATE_DICT_CONFIG, write_config
from tests.helpers.hostile_files import Payload
from tests.helpers.onnx_builders import small_onnx
from tests.helpers.paths import SAMPLES

CNN = SAMPLES / "digits_cnn.pt2"


def test_unknown_key(tmp_path, cnn_config):
    cnn_config.write_text(CNN_CONFIG.replace("per_channel", "per_chanel"))
    out = tmp_path / "out"
    assert_refused(run_cli(CNN, cnn_config, out), out, "passes[0].per_chanel", "line 7")


def test_wrong_type(tmp_path, cnn_config):
    cnn_config.write_text(CNN_CONFIG.replace("batch_sizes: [8]", "batch_sizes: eight"))
    out = tmp_path / "out"
    assert_refused(run_cli(CNN, cnn_config, out), out, "report.batch_sizes", "line 8")


def test_unknown_pass_suggests_the_closest(tmp_path, cnn_config):
    cnn_config.write_text(CNN_CONFIG.replace("quantize.static", "quantize.dynamc"))
    out = tmp_path / "out"
    assert_refused(run_cli(CNN, cnn_config, out), out, "did you mean 'quantize.dynamic'")


def test_torch_pass_on_onnx_input(tmp_path, cnn_config):
    model = small_onnx(tmp_path / "model.onnx")
    cnn_config.write_text(CNN_CONFIG.replace("passes:\n", "passes:\n  - type: test.identity\n"))
    out = tmp_path / "out"
    assert_refused(run_cli(model, cnn_config, out), out, "test.identity", "is ONNX")


def test_missing_model_file(tmp_path, cnn_config):
    out = tmp_path / "out"
    assert_refused(run_cli(tmp_path / "nope.pt2", cnn_config, out), out, ": not found")


def test_missing_data_file(tmp_path, cnn_config):
    (tmp_path / "digits_eval.npz").unlink()
    out = tmp_path / "out"
    assert_refused(run_cli(CNN, cnn_config, out), out, "data.eval.path", "not found")


def test_npz_without_the_named_key(tmp_path, cnn_config):
    cnn_config.write_text(CNN_CONFIG.replace("labels: y", "labels: label"))
    out = tmp_path / "out"
    assert_refused(run_cli(CNN, cnn_config, out), out, "'label'", "it has: x, y")


def test_data_that_does_not_fit_the_model(tmp_path, cnn_config):
    np.savez(
        tmp_path / "digits_eval.npz",
        x=np.zeros((10, 1, 9, 9), np.float32),
        y=np.zeros(10, np.int64),
    )
    out = tmp_path / "out"
    assert_refused(
        run_cli(CNN, cnn_config, out), out, "data.eval does not fit the model", "[1, 9, 9]"
    )


def test_truncated_model(tmp_path, cnn_config):
    model = tmp_path / "cut.pt2"
    model.write_bytes(CNN.read_bytes()[: CNN.stat().st_size // 2])
    out = tmp_path / "out"
    assert_refused(run_cli(model, cnn_config, out), out, "truncated or corrupt")


def test_random_bytes(tmp_path, cnn_config):
    model = tmp_path / "noise.pt"
    model.write_bytes(np.random.default_rng(0).bytes(4096))
    out = tmp_path / "out"
    assert_refused(run_cli(model, cnn_config, out), out, "not a recognised model file")


def test_state_dict_without_arch(tmp_path, cnn_config):
    out = tmp_path / "out"
    assert_refused(
        run_cli(SAMPLES / "digits_cnn_state.pt", cnn_config, out),
        out,
        "is a state_dict",
        "model.arch",
    )


def test_arch_that_does_not_import(tmp_path):
    config = write_config(tmp_path, STATE_DICT_CONFIG)
    (tmp_path / "arch.py").write_text("import no_such_package\n")
    out = tmp_path / "out"
    assert_refused(
        run_cli(SAMPLES / "digits_cnn_state.pt", config, out),
        out,
        "model.arch: cannot import",
        "no_such_package",
    )


def test_state_dict_that_does_not_fit_its_arch(tmp_path):
    config = write_config(
        tmp_path,
        STATE_DICT_CONFIG.replace(
            "arch.py:DigitsCNN}", "arch.py:DigitsCNN, arch_args: {width: 32}}"
        ),
    )
    shutil.copyfile(SAMPLES / "arch.py", tmp_path / "arch.py")
    out = tmp_path / "out"
    assert_refused(
        run_cli(SAMPLES / "digits_cnn_state.pt", config, out),
        out,
        "does not fit model.arch",
        "shape mismatch",
    )


def test_pickled_module_is_refused_without_running_it(tmp_path, cnn_config):
    marker = tmp_path / "pwned"
    model = tmp_path / "whole.pt"
    torch.save({"model": torch.nn.Linear(2, 2), "hook": Payload(marker)}, model)
    out = tmp_path / "out"
    assert_refused(run_cli(model, cnn_config, out), out, "pickled", "--trust-pickle")
    assert not marker.exists()


def test_pickle_payload_in_plain_pickle_is_refused(tmp_path, cnn_config):
    marker = tmp_path / "pwned"
    model = tmp_path / "legacy.pt"
    model.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    out = tmp_path / "out"
    result = run_cli(model, cnn_config, out)
    assert result.exit_code == 2 and not marker.exists(), result.stderr


def test_out_dir_not_empty_without_force(tmp_path, cnn_config):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_cli(CNN, cnn_config, out)
    assert result.exit_code == 2 and "--force" in result.stderr
    assert os.listdir(out) == ["keep.txt"]


def test_missing_calibration_for_static(tmp_path):
    config = write_config(
        tmp_path,
        CNN_CONFIG.replace("  calibration: {path: digits_calib.npz, inputs: [x], limit: 64}\n", ""),
    )
    out = tmp_path / "out"
    assert_refused(run_cli(CNN, config, out), out, "needs data.calibration")


@pytest.mark.parametrize("command", [["validate"], ["run", CNN, "-o", "x", "-c"]])
def test_missing_config(tmp_path, command):
    result = invoke(*command, tmp_path / "none.yaml")
    assert result.exit_code == 2 and ": not found" in result.stderr


def test_declared_input_shape_that_the_data_does_not_have(tmp_path):
    text = CNN_CONFIG.replace(
        "version: 1\n", "version: 1\nmodel: {inputs: [{name: x, shape: [batch, 3, 8, 8]}]}\n"
    )
    config = write_config(tmp_path, text)
    out = tmp_path / "out"
    assert_refused(run_cli(CNN, config, out), out, "[batch, 3, 8, 8]", "'x' has shape")


def test_validate_runs_the_passes_own_checks(tmp_path):
    config = write_config(
        tmp_path,
        CNN_CONFIG.replace("  calibration: {path: digits_calib.npz, inputs: [x], limit: 64}\n", ""),
    )
    result = invoke("validate", config)
    assert result.exit_code == 2 and "needs data.calibration" in result.stderr


def test_onnx_input_with_a_fixed_batch_other_than_the_measured_one(tmp_path, cnn_config):
    model = small_onnx(tmp_path / "fixed.onnx", batch=3, dynamic=False)
    cnn_config.write_text(CNN_CONFIG.replace("quantize.static", "quantize.dynamic"))
    out = tmp_path / "out"
    assert_refused(run_cli(model, cnn_config, out), out, "fixed at 3", "report.batch_sizes")


def test_program_saved_with_a_fixed_batch(tmp_path, cnn_config):
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    model = tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(module, (torch.zeros(3, 1, 8, 8),)), model)
    out = tmp_path / "out"
    assert_refused(run_cli(model, cnn_config, out), out, "fixed batch of 3", "dynamic_shapes")


def test_calibration_data_of_the_wrong_shape(tmp_path, cnn_config):
    np.savez(tmp_path / "digits_calib.npz", x=np.zeros((10, 1, 7, 7), np.float32))
    out = tmp_path / "out"
    assert_refused(run_cli(CNN, cnn_config, out), out, "data.calibration does not fit", "[1, 7, 7]")


def test_data_of_the_wrong_shape_for_an_onnx_input(tmp_path, cnn_config):
    model = small_onnx(tmp_path / "model.onnx")
    np.savez(
        tmp_path / "digits_eval.npz",
        x=np.zeros((10, 1, 9, 9), np.float32),
        y=np.zeros(10, np.int64),
    )
    out = tmp_path / "out"
    assert_refused(run_cli(model, cnn_config, out), out, "data.eval does not fit", "inputs: x")


@pytest.mark.parametrize(
    ("pass_yaml", "needle"),
    [
        (
            "quantize.static\n    max_accuracy_drop: 0.01",
            "passes[0].max_accuracy_drop needs data.eval",
        ),
        ("quantize.auto", "quantize.auto judges candidates on data.eval"),
    ],
)
def test_an_accuracy_budget_without_eval_data(tmp_path, pass_yaml, needle):
    text = CNN_CONFIG.replace("  eval: {path: digits_eval.npz, inputs: [x], labels: y}\n", "")
    text = text.replace("quantize.static\n    per_channel: true", pass_yaml)
    config = write_config(tmp_path, text)
    out = tmp_path / "out"
    assert_refused(run_cli(CNN, config, out), out, needle)


@pytest.mark.parametrize("value", [0, 100.5])
def test_percentile_outside_0_100(tmp_path, value):
    text = CNN_CONFIG.replace(
        "per_channel: true", f"calibration: percentile\n    percentile: {value}"
    )
    config = write_config(tmp_path, text)
    out = tmp_path / "out"
    assert_refused(run_cli(CNN, config, out), out, "passes[0].percentile")


@pytest.mark.parametrize("pass_type", ["quantize.static", "quantize.auto"])
def test_exclude_naming_a_node_the_model_lacks_lists_close_names(tmp_path, pass_type):
    text = CNN_CONFIG.replace("quantize.static", pass_type).replace(
        "per_channel: true", "exclude: [Convv]"
    )
    config = write_config(tmp_path, text)
    out = tmp_path / "out"
    # Found in the exported graph, after progress lines: --quiet leaves the error alone.
    result = run_cli(CNN, config, out, "--quiet")
    assert_refused(result, out, "passes[0].exclude: 'Convv'", "close names: Conv")


@pytest.mark.parametrize(
    ("command", "needle"),
    [
        (("run", "/dev/zero", "-c", "{config}", "-o", "{out}"), "is a character device"),
        (("run", "{fifo}", "-c", "{config}", "-o", "{out}"), "is a named pipe (FIFO)"),
        (("run", "{folder}", "-c", "{config}", "-o", "{out}"), "is a folder without config.json"),
        (("bench", "{folder}"), "is a folder, not a model file"),
        (("init", CNN, "--data", "/dev/zero"), "--data /dev/zero: is a character device"),
        (("init", CNN, "--data", "{fifo}"), "is a named pipe (FIFO), not an .npz file"),
        (
            ("run", CNN, "-c", "{config}", "-o", "{out}", "--set", "data.eval.path=/etc/hostname"),
            "/etc/hostname is read as a folder of images (it has no .npz or .csv suffix",
        ),
        (
            ("run", CNN, "-c", "{config}", "-o", "{out}", "--set", "data.eval.path={folder}.npz"),
            "is a folder, not an .npz file",
        ),
    ],
)
def test_a_path_that_exists_is_never_called_not_found(tmp_path, cnn_config, command, needle):
    """A folder, a FIFO or a device where a file should be is named as what it is (and a FIFO
    is never opened: the command would hang)."""
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder.npz").mkdir()
    places = {"config": cnn_config, "out": tmp_path / "out", "fifo": tmp_path / "pipe"}
    places["folder"] = tmp_path / "folder"
    result = invoke(*(str(part).format(**places) for part in command))
    assert_refused(result, tmp_path / "out", needle)
    assert "not found" not in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("nosuch",), "No such command 'nosuch'. (see: compress --help)"),
        (("cache", "nosuch"), "No such command 'nosuch'. (see: compress cache --help)"),
        (("run", CNN, "--bogus"), "No such option: --bogus"),
        (("sweep", CNN, "-c", "c.yaml", "-o", "o", "--jobs", "x"), "Invalid value for '--jobs'"),
    ],
)
def test_usage_errors_are_one_line_like_every_bad_input(tmp_path, args, needle):
    result = invoke(*args)
    assert_refused(result, tmp_path / "o", needle)
