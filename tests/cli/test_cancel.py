"""SIGTERM (how CI cancels a job) and SIGINT (Ctrl-C), sent to a real `compress run` process at
several moments, from loading to the renames that publish the results: the process exits 143 or
130 with one line, OUT holds no results and no staged files, the temporary folder holds no work
folder, and the next run into the same OUT needs no --force."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.helpers.output import assert_one_error, contents, fast_job, work_folders
from tests.helpers.paths import ROOT, SAMPLES

# Runs the CLI with one function wrapped so that its k-th call first sends the process a signal
# (a real one, through the kernel). "publish" wraps os.replace, counting only the renames onto
# a result's name: the signal then lands between two of the renames that publish the results.
WRAPPER = """
import importlib, os, signal, sys
point, name, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
FINAL = ("model.onnx", "report.json", "report.md", "report.html", "gates.xml")
calls = 0

def counted(*args, **kwargs):
    return point != "publish" or os.path.basename(str(args[1])) in FINAL

if point == "shutdown":  # while the interpreter exits, after the command has returned
    import atexit
    atexit.register(lambda: os.kill(os.getpid(), getattr(signal, name)))
    point = "os.getpid"
module, attr = ("os", "replace") if point == "publish" else point.rsplit(".", 1)
module = importlib.import_module(module)
original = getattr(module, attr)

def wrapped(*args, **kwargs):
    global calls
    if counted(*args, **kwargs):
        calls += 1
        if calls == nth:
            os.kill(os.getpid(), getattr(signal, name))
    return original(*args, **kwargs)

setattr(module, attr, wrapped)
sys.argv = ["compress", *sys.argv[4:]]
from compress_cli.main import app
app()
"""

CASES = [  # (where the signal lands, model, function wrapped, signal, which call)
    ("loading, work folder made", "pt2", "compress.job.preflight.check_data_fits", "SIGTERM", 1),
    ("loading the model", "onnx", "compress.job.preflight.load_model", "SIGINT", 1),
    ("export", "pt2", "compress.job.pipeline.export_to_onnx", "SIGTERM", 1),
    ("measuring", "onnx", "compress.job.pipeline.measure_latency", "SIGINT", 1),
    ("first rename", "onnx", "publish", "SIGTERM", 1),
    ("last rename (--junit)", "onnx", "publish", "SIGINT", 5),
]
EXIT = {"SIGTERM": 143, "SIGINT": 130}


@pytest.fixture
def job(tmp_path):
    """(model paths by kind, config, OUT, --junit file, a TMPDIR of the test's own)"""
    model, config = fast_job(tmp_path / "job")
    models = {"onnx": model, "pt2": SAMPLES / "digits_cnn.pt2"}
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    return models, config, tmp_path / "out", tmp_path / "gates.xml", tmpdir


def compress_command(model, config, out, junit, *extra) -> list[str]:
    return ["run", str(model), "-c", str(config), "-o", str(out), "--junit", str(junit), *extra]


def run_process(command: list[str], tmpdir, **options) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, **options
    )


def assert_left_nothing(out, junit, tmpdir):
    assert not out.exists() or contents(out) == {}, contents(out)
    assert not junit.exists()
    assert work_folders(tmpdir) == []


@pytest.mark.parametrize(("moment", "kind", "point", "name", "nth"), CASES)
def test_a_signal_at_any_moment_leaves_nothing(job, moment, kind, point, name, nth):
    models, config, out, junit, tmpdir = job
    arguments = compress_command(models[kind], config, out, junit, "-q")
    done = run_process([sys.executable, "-c", WRAPPER, point, name, str(nth), *arguments], tmpdir)
    assert done.returncode == EXIT[name], done.stderr
    assert_one_error(done.stderr, name)
    assert_left_nothing(out, junit, tmpdir)
    if moment == "first rename":  # once is enough: the next run needs no --force
        again = run_process([sys.executable, "-m", "compress_cli", *arguments], tmpdir)
        assert again.returncode == 0, again.stderr
        assert sorted(os.listdir(out)) == ["model.onnx", "report.html", "report.json", "report.md"]


def test_sigterm_from_outside_while_measuring(job):
    """Sent by another process, while the run is busy measuring latency in ONNX Runtime."""
    models, config, out, junit, tmpdir = job
    slow = ("--set", "report.min_seconds=20", "--set", "report.max_seconds=30")
    command = [
        sys.executable,
        "-m",
        "compress_cli",
        *compress_command(models["onnx"], config, out, junit),
    ]
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    process = subprocess.Popen(
        [*command, *slow], cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    try:
        lines = []
        for raw in process.stderr:
            lines.append(raw.decode())
            if "measuring latency" in lines[-1]:
                process.send_signal(signal.SIGTERM)
                break
        lines += [raw.decode() for raw in process.stderr]
        assert process.wait(timeout=30) == 143, "".join(lines)
    finally:
        process.kill()
        process.wait()
    assert lines[-1].strip() == "error: stopped by SIGTERM", lines
    assert_left_nothing(out, junit, tmpdir)


@pytest.mark.parametrize(
    ("point", "name", "nth"),
    [("compress_cli.run._append_step_summary", "SIGINT", 1), ("shutdown", "SIGTERM", 0)],
)
def test_a_signal_after_the_results_are_in_place_changes_nothing(job, point, name, nth):
    """Once committed, the results are final: a signal then (the command still printing, or
    the interpreter shutting down) neither removes them nor turns the exit code into 143/130."""
    models, config, out, junit, tmpdir = job
    arguments = compress_command(models["onnx"], config, out, junit, "-q")
    done = run_process([sys.executable, "-c", WRAPPER, point, name, str(nth), *arguments], tmpdir)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(out)) == ["model.onnx", "report.html", "report.json", "report.md"]
    assert junit.exists() and work_folders(tmpdir) == []
