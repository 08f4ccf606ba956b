"""What compress writes never follows a planted link, never replaces an input, and a run that
fails leaves no results: not its own half-written ones, not the previous run's."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from compress.errors import DataError
from compress.quant.int8 import DynamicQuantization
from tests.helpers.cli import invoke
from tests.helpers.configs import CNN_CONFIG, write_config
from tests.helpers.onnx_builders import small_onnx
from tests.helpers.output import (
    RESULTS,
    assert_one_error,
    contents,
    fast_job,
    previous_results,
    read_only_folder,
    tmpfs,
    work_folders,
)
from tests.helpers.paths import SAMPLES


def victims(folder, *names):
    """Files outside OUT that a followed link would overwrite."""
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_text(f"victim {name}")
    return folder


def test_links_planted_in_out_are_replaced_never_written_through(tmp_path):
    model, config = fast_job(tmp_path / "job")
    data = "model.onnx.data"  # where a model's weights over 2 GB would go
    out, outside = tmp_path / "out", victims(tmp_path / "outside", *RESULTS, data, "gates.xml")
    out.mkdir()
    for name in RESULTS:  # at the final names, and at the staging names compress used to use
        (out / name).symlink_to(outside / name)
        (out / f".{name}.partial").symlink_to(outside / name)
    (out / data).symlink_to(outside / data)
    junit = tmp_path / "gates.xml"
    junit.symlink_to(outside / "gates.xml")
    (tmp_path / ".gates.xml.partial").symlink_to(outside / "gates.xml")
    before = contents(outside)

    result = invoke("run", model, "-c", config, "-o", out, "--force", "--junit", junit, "-q")
    assert result.exit_code == 0, result.stderr
    assert contents(outside) == before
    for name in RESULTS:
        assert not (out / name).is_symlink() and (out / name).stat().st_size > 0
    assert not (out / data).is_symlink() and not (out / data).exists()  # moved aside, not followed
    assert not junit.is_symlink() and "<testsuites" in junit.read_text()
    assert not [n for n in os.listdir(out) if n.startswith(".compress-")]


def test_init_and_report_replace_links_at_their_output(tmp_path, two_runs):
    outside = victims(tmp_path / "outside", "starter.yaml", "both.md")
    model = small_onnx(tmp_path / "m.onnx")
    starter, both = tmp_path / "starter.yaml", tmp_path / "both.md"
    for path in (starter, both):  # at the final name and at the one compress used to stage at
        path.symlink_to(outside / path.name)
        path.with_name(f".{path.name}.partial").symlink_to(outside / path.name)
    before = contents(outside)
    assert invoke("init", model, "-o", starter, "--force").exit_code == 0
    reports = [run / "report.json" for run in two_runs]
    assert invoke("report", *reports, "-o", both).exit_code == 2  # it exists: --force
    assert invoke("report", *reports, "-o", both, "--force").exit_code == 0
    assert contents(outside) == before
    assert "version: 1" in starter.read_text() and both.read_text().startswith("# Compression")


def _input_in_out(kind, job, out):
    """Arrange for OUT/<a result> to be one of the run's inputs; the run's arguments."""
    model, config = job
    if kind == "model":
        shutil.copyfile(model, out / "model.onnx")
        return [out / "model.onnx", "-c", config], "the model"
    if kind == "model via symlink":
        shutil.copyfile(model, out / "model.onnx")
        link = model.with_name("link.onnx")
        link.symlink_to(out / "model.onnx")
        return [link, "-c", config], "the model"
    if kind == "model via hard link":
        os.link(model, out / "model.onnx")
        return [model, "-c", config], "the model"
    if kind == "config via hard link":
        os.link(config, out / "report.md")
        return [model, "-c", config], "the config"
    if kind == "data file via symlink":
        shutil.copyfile(SAMPLES / "digits_eval.npz", out / "report.html")
        eval_file = config.with_name("digits_eval.npz")
        eval_file.unlink()
        eval_file.symlink_to(out / "report.html")
        return [model, "-c", config], "data.eval.path"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "model",
        "model via symlink",
        "model via hard link",
        "config via hard link",
        "data file via symlink",
    ],
)
def test_force_refuses_to_replace_an_input_and_touches_nothing(tmp_path, kind):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    arguments, label = _input_in_out(kind, fast_job(tmp_path / "job"), out)
    before = contents(out)
    result = invoke("run", *arguments, "-o", out, "--force", "-q")
    assert result.exit_code == 2
    assert_one_error(result.stderr, label, "--force would overwrite it")
    assert contents(out) == before


def test_force_refuses_to_replace_a_distill_teacher(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    small_onnx(out / "model.onnx")  # a previous result, used as the teacher
    config = write_config(
        tmp_path,
        CNN_CONFIG.replace(
            "  eval:", "  train: {path: digits_calib.npz, inputs: [x], labels: y}\n  eval:"
        )
        .replace("  - type: quantize.static\n    per_channel: true\n", "")
        .replace(
            "passes:\n",
            "passes:\n  - {type: distill, teacher: {path: out/model.onnx}, epochs: 1}\n",
        ),
    )
    before = contents(out)
    result = invoke("run", SAMPLES / "digits_cnn.pt2", "-c", config, "-o", out, "--force", "-q")
    assert result.exit_code == 2
    assert_one_error(result.stderr, "passes[0].teacher.path", "--force would overwrite it")
    assert contents(out) == before


@pytest.mark.parametrize("target", ["config", "model via symlink", "data file", "own report"])
def test_junit_refuses_an_input_or_a_result(tmp_path, target):
    model, config = fast_job(tmp_path / "job")
    out = tmp_path / "out"
    if target == "config":
        junit = config
    elif target == "model via symlink":
        junit = tmp_path / "gates.xml"
        junit.symlink_to(model)
    elif target == "data file":
        junit = config.with_name("digits_eval.npz")
    else:
        junit = out / "report.json"
    before = contents(config.parent)
    result = invoke("run", model, "-c", config, "-o", out, "--junit", junit, "-q")
    assert result.exit_code == 2
    assert_one_error(result.stderr, str(junit))
    assert contents(config.parent) == before and not out.exists()


def test_init_and_report_refuse_to_overwrite_what_they_read(tmp_path):
    model = small_onnx(tmp_path / "m.onnx")
    link = tmp_path / "starter.yaml"
    link.symlink_to(model)
    before = model.read_bytes()
    for target in (model, link):
        result = invoke("init", model, "-o", target, "--force")
        assert result.exit_code == 2
        assert_one_error(result.stderr, "is the model")
    report = tmp_path / "report.json"
    report.write_text("{}")
    result = invoke("report", report, "-o", report)
    assert result.exit_code == 2 and report.read_text() == "{}"
    assert_one_error(result.stderr, "is an input report")
    assert model.read_bytes() == before


def test_a_parity_failure_with_force_leaves_no_results_old_or_new(tmp_path, cnn_config):
    out, junit = tmp_path / "out", tmp_path / "gates.xml"
    previous_results(out)
    junit.write_text("old gates")
    cnn_config.write_text(CNN_CONFIG + "export: {parity_atol: 1.0e-12}\n")
    arguments = ("-c", cnn_config, "-o", out, "--force", "--junit", junit, "-q")
    result = invoke("run", SAMPLES / "digits_cnn.pt2", *arguments)
    assert result.exit_code == 1
    assert_one_error(result.stderr, "parity check failed")
    assert sorted(os.listdir(out)) == ["keep.txt"] and not junit.exists()


@pytest.mark.parametrize(("error", "code"), [(RuntimeError("boom"), 1), (DataError("bad"), 2)])
def test_a_pass_failure_with_force_leaves_no_results(tmp_path, monkeypatch, error, code):
    def fail(self, *args):
        raise error

    monkeypatch.setattr(DynamicQuantization, "apply", fail)
    model, config = fast_job(tmp_path / "job")
    out = tmp_path / "out"
    previous_results(out)
    result = invoke("run", model, "-c", config, "-o", out, "--force", "-q")
    assert result.exit_code == code, result.stderr
    assert sorted(os.listdir(out)) == ["keep.txt"]


def _no_work(*args, **kwargs):
    raise AssertionError("the run started working before checking its output folder")


@pytest.mark.parametrize("case", ["a file", "a dangling link", "read-only", "read-only parent"])
def test_an_unusable_out_is_refused_before_any_work(tmp_path, monkeypatch, case):
    monkeypatch.setattr("compress.job.pipeline.check_config", _no_work)
    model, config = fast_job(tmp_path / "job")
    out = tmp_path / "out"
    expected = {
        "a file": "not a folder",
        "a dangling link": "which does not exist",
        "read-only": "not writable",
        "read-only parent": "not writable",
    }[case]
    if case == "a file":
        out.write_text("x")
    elif case == "a dangling link":
        out.symlink_to(tmp_path / "nowhere")
    if case.startswith("read-only"):
        with read_only_folder(tmp_path / "ro") as folder:
            target = folder if case == "read-only" else folder / "out"
            result = invoke("run", model, "-c", config, "-o", target, "-q")
    else:
        result = invoke("run", model, "-c", config, "-o", out, "-q")
    assert result.exit_code == 2
    assert_one_error(result.stderr, expected)


def test_a_full_output_disk_is_one_line_and_leaves_nothing(tmp_path):
    model, config = fast_job(tmp_path / "job")
    with tmpfs(tmp_path / "small", "16k") as disk:
        result = invoke("run", model, "-c", config, "-o", disk / "out", "-q")
        assert result.exit_code == 2
        assert_one_error(result.stderr, "No space left on device", "choose another -o")
        assert os.listdir(disk) == []
    again = invoke("run", model, "-c", config, "-o", tmp_path / "out", "-q")  # works elsewhere
    assert again.exit_code == 0, again.stderr


def test_a_full_temp_dir_names_tmpdir_and_leaves_nothing(tmp_path, monkeypatch, cnn_config):
    out = tmp_path / "out"
    with tmpfs(tmp_path / "tmp", "300k") as disk:
        monkeypatch.setattr(tempfile, "tempdir", str(disk))
        result = invoke("run", SAMPLES / "digits_cnn.pt2", "-c", cnn_config, "-o", out, "-q")
        assert result.exit_code == 2
        assert_one_error(result.stderr, "no space left in the temporary folder", "TMPDIR")
        assert work_folders(disk) == [] and not out.exists()


def test_a_run_leaves_no_folder_of_its_own_in_the_temp_dir(tmp_path, monkeypatch):
    """Not even one that a library brings back later: torch remembers its cache folder, made
    inside the run's temporary folder, and makes it again on its next call."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    # torch's exporter asks for that folder during some runs; make sure this one does
    monkeypatch.setattr("compress.job.pipeline.seed_everything", lambda seed: cache_dir())
    model, config = fast_job(tmp_path / "job")
    result = invoke("run", model, "-c", config, "-o", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.stderr
    cache_dir()  # a later call, in the same process
    assert work_folders(tmpdir) == []
