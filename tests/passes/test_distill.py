"""Distillation: it wins back what pruning cost, the same seed gives the same result, early
stopping keeps the best epoch, any teacher format works, feature matching learns through a
projection, and bad input is refused before training starts."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest

from compress.job.pipeline import run
from tests.helpers.cli import assert_refused, run_cli
from tests.helpers.configs import write_config
from tests.helpers.latency import slower_after_the_first_stage
from tests.helpers.paths import ROOT, SAMPLES

CNN = SAMPLES / "digits_cnn.pt2"
PRUNE_THEN_DISTILL = """\
version: 1
data:
  train: {{path: digits_train.npz, inputs: [x], labels: y, limit: 600}}
  eval: {{path: digits_eval.npz, inputs: [x], labels: y}}
passes:
  - {{type: prune.channels, amount: 0.5, finetune_epochs: 0}}
  - {{type: distill, {distill}}}
report: {{batch_sizes: [8], min_runs: 5, min_seconds: 0, max_seconds: 0.2, warmup_runs: 1}}
"""
_runs: dict[str, tuple] = {}


def distill_run(tmp_path_factory, params: str):
    """Prune the CNN, then distill with `params`; each setting runs once per session."""
    if params not in _runs:
        folder = tmp_path_factory.mktemp("distill")
        config = write_config(folder, PRUNE_THEN_DISTILL.format(distill=params))
        report = run(CNN, config, folder / "out")
        _runs[params] = report, folder / "out"
    return _runs[params]


def weights(out) -> dict[str, np.ndarray]:
    graph = onnx.load(str(out / "model.onnx")).graph
    return {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}


EARLY = "epochs: 30, lr: 0.005, patience: 2"


def test_distillation_wins_back_what_pruning_cost(tmp_path_factory):
    report, out = distill_run(tmp_path_factory, EARLY)
    baseline, pruned, distilled = (s.metric.value for s in report.stages)
    assert pruned < baseline - 0.2  # half the channels gone, no training yet
    assert distilled > baseline - 0.03
    details = report.stages[2].details
    assert details.metric.before == pytest.approx(pruned, abs=0.01)
    assert details.metric.recovered > 0.9
    assert details.train_seconds > 0 and details.epochs_run == len(details.losses)
    text = (out / "report.md").read_text()
    assert re.search(r"distill: distilled the current model from the model as loaded", text)
    assert "of the gap recovered" in text and "epochs were picked on data.eval" in text


def test_early_stopping_keeps_the_best_epoch(tmp_path_factory):
    report, _ = distill_run(tmp_path_factory, EARLY)
    stage = report.stages[2]
    details, per_epoch = stage.details, stage.details.metric.per_epoch
    assert details.epochs_run < 30 and details.stopped.startswith("early stop")
    best = details.metric.best_epoch
    assert per_epoch[best - 1] == max(per_epoch) == details.metric.after
    assert all(value <= max(per_epoch[:-2]) for value in per_epoch[-2:])  # patience ran out
    # The written model is the restored best epoch: scored on the same data, it agrees.
    assert stage.metric.value == pytest.approx(details.metric.after, abs=1 / 397)


def test_the_same_seed_gives_the_same_model(tmp_path_factory):
    first, first_out = distill_run(tmp_path_factory, EARLY)
    again, again_out = distill_run(tmp_path_factory, EARLY + ", seed: 0")
    other, other_out = distill_run(tmp_path_factory, EARLY + ", seed: 1")
    assert first.stages[2].metric == again.stages[2].metric
    assert first.stages[2].details.losses == again.stages[2].details.losses
    same, changed = weights(first_out), weights(other_out)
    assert all(np.array_equal(same[k], v) for k, v in weights(again_out).items())
    assert any(not np.array_equal(same[k], changed[k]) for k in same)


def test_a_declared_student_learns_features_through_a_projection(tmp_path):
    (tmp_path / "arch.py").write_bytes((SAMPLES / "arch.py").read_bytes())
    text = PRUNE_THEN_DISTILL.format(distill="").replace(
        "  - {type: prune.channels, amount: 0.5, finetune_epochs: 0}\n  - {type: distill, }\n",
        "  - type: distill\n"
        "    student: {arch: arch.py:DigitsCNN, arch_args: {width: 16, hidden: 32}}\n"
        "    features: [[features.5, features.5]]  # 128 teacher channels, 32 student ones\n"
        "    epochs: 8\n    lr: 0.01\n",
    )
    report = run(CNN, write_config(tmp_path, text), tmp_path / "out")
    baseline, student = report.stages
    details = student.details
    assert "1 feature pair(s)" in details.reason and "DigitsCNN" in details.student
    assert student.params < baseline.params / 8  # the small student was exported
    assert details.metric.before < 0.3 < details.metric.after
    assert student.metric.value > 0.4  # 4x chance after a few epochs from scratch


def test_a_slower_student_is_reverted_with_on_slower_revert(tmp_path, monkeypatch):
    """A declared student that runs slower than the model it replaces: the input is kept."""
    from compress.measure import speed as speed_guard

    monkeypatch.setattr(speed_guard, "measure_latency", slower_after_the_first_stage)
    (tmp_path / "arch.py").write_bytes((SAMPLES / "arch.py").read_bytes())
    text = PRUNE_THEN_DISTILL.format(distill="").replace(
        "  - {type: prune.channels, amount: 0.5, finetune_epochs: 0}\n  - {type: distill, }\n",
        "  - type: distill\n"
        "    student: {arch: arch.py:DigitsCNN, arch_args: {width: 16, hidden: 32}}\n"
        "    epochs: 1\n    on_slower: revert\n",
    )
    out = tmp_path / "out"
    result = run_cli(CNN, write_config(tmp_path, text), out)
    assert result.exit_code == 0, result.stderr
    assert "distill made the model slower" in result.stderr
    baseline, student = json.loads((out / "report.json").read_text())["stages"]
    assert student["reverted"] and student["params"] == baseline["params"]


@pytest.mark.parametrize("teacher", ["onnx", "state_dict"])
def test_a_teacher_from_a_file_in_another_format(tmp_path, teacher):
    if teacher == "onnx":
        run(CNN, write_config(tmp_path, "version: 1\n" + EVAL_ONLY), tmp_path / "t")
        spec = "teacher: t/model.onnx"
    else:
        (tmp_path / "arch.py").write_bytes((SAMPLES / "arch.py").read_bytes())
        spec = f"teacher: {{path: {SAMPLES / 'digits_cnn_state.pt'}, arch: arch.py:DigitsCNN}}"
    text = PRUNE_THEN_DISTILL.format(distill=f"{spec}, epochs: 2, lr: 0.005")
    report = run(CNN, write_config(tmp_path, text, "d.yaml"), tmp_path / "out")
    details = report.stages[2].details
    assert details.teacher == ("model.onnx" if teacher == "onnx" else "digits_cnn_state.pt")
    assert details.metric.teacher == pytest.approx(report.baseline.metric.value)
    assert details.metric.after > details.metric.before + 0.2


def test_without_labels_the_student_learns_from_the_teacher_alone(tmp_path):
    text = PRUNE_THEN_DISTILL.format(distill="epochs: 3, lr: 0.005").replace(
        ", labels: y, limit", ", limit"
    )
    report = run(CNN, write_config(tmp_path, text), tmp_path / "out")
    details = report.stages[2].details
    assert "teacher only (data.train has no labels)" in details.reason
    assert details.metric.after > details.metric.before + 0.2


EVAL_ONLY = (
    "data: {eval: {path: digits_eval.npz, inputs: [x], labels: y}}\n"
    "report: {batch_sizes: [8], min_runs: 5, min_seconds: 0, max_seconds: 0.2, warmup_runs: 1}\n"
)


@pytest.mark.parametrize(
    ("distill", "needles"),
    [
        ("alpha: 1.5", ["passes[1].alpha", "less than or equal to 1"]),
        ("temperature: 0", ["passes[1].temperature", "greater than 0"]),
        (
            "student: {arch: arch.py:DigitsCNN, arch_args: {num_classes: 5}}",
            ["teacher's output [2, 10] does not match the student's [2, 5]"],
        ),
        (
            "features: [[features.0, feature.0]]",
            ["passes[1].features", "student has no module 'feature.0'", "features.0"],
        ),
        (
            "student: {arch: arch.py:DigitsCNN}, features: [[features.0, features.5]]",
            ["[2, 128, 4, 4] (student) and [2, 64, 8, 8] (teacher)", "differ beyond their width"],
        ),
        ("teacher: nowhere.pt2", [": not found", "nowhere.pt2"]),
        (
            f"teacher: {SAMPLES / 'digits_cnn.ts'}, features: [[features.0, features.0]]",
            ["TorchScript teacher's modules cannot be hooked"],
        ),
    ],
)
def test_bad_distillation_params_are_refused_before_training(tmp_path, distill, needles):
    (tmp_path / "arch.py").write_bytes((SAMPLES / "arch.py").read_bytes())
    config = write_config(tmp_path, PRUNE_THEN_DISTILL.format(distill=distill))
    out = tmp_path / "out"
    assert_refused(run_cli(CNN, config, out), out, *needles)  # one line: nothing ran before


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("version: 1\n" + EVAL_ONLY + "passes: [{type: distill}]\n", ["add data.train"]),
        (
            "version: 1\ndata: {train: {path: digits_train.npz, inputs: [x]}}\n"
            "passes: [{type: distill, patience: 3}]\n",
            ["passes[0].patience", "add data.validation"],
        ),
    ],
)
def test_distillation_without_the_data_it_needs(tmp_path, text, needles):
    out = tmp_path / "out"
    assert_refused(run_cli(CNN, write_config(tmp_path, text), out), out, *needles)


# The progress tests run compress as a program: the model as loaded is distilled (no pruning
# before it: one export fewer per run), on few samples (what they look at is the progress).
QUICK = (
    PRUNE_THEN_DISTILL.format(distill="epochs: 4")
    .replace("limit: 600", "limit: 300")
    .replace("  - {type: prune.channels, amount: 0.5, finetune_epochs: 0}\n", "")
)


def compress_command(config, out, *extra):
    return [
        sys.executable,
        "-m",
        "compress_cli",
        "run",
        str(CNN),
        "-c",
        str(config),
        "-o",
        str(out),
        *extra,
    ]


def test_progress_is_plain_lines_off_a_terminal_and_silent_when_quiet(tmp_path):
    config = write_config(tmp_path, QUICK)
    piped = subprocess.run(  # a real process: its stderr is a pipe
        compress_command(config, tmp_path / "a"), capture_output=True, text=True, cwd=ROOT,
        timeout=300,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    lines = [line for line in piped.stderr.splitlines() if "distill: epoch" in line]
    assert len(lines) == 4 and re.search(r"epoch 4/4, loss [\d.]+, top1 [\d.]+$", lines[-1])
    assert "\x1b[" not in piped.stderr and "━" not in piped.stderr  # no colours, no bar

    quiet = run_cli(CNN, config, tmp_path / "b", "--quiet", "--json")
    assert quiet.exit_code == 0, quiet.stderr
    # no progress, no log; only warnings (each run may find the machine busy)
    assert all(line.startswith("warning: ") for line in quiet.stderr.splitlines()), quiet.stderr
    assert json.loads(quiet.stdout)["stages"][-1]["details"]["epochs_run"] == 4


def test_progress_on_a_terminal_is_a_bar_with_loss_and_metric(tmp_path):
    config = write_config(tmp_path, QUICK.replace("epochs: 4", "epochs: 12"))
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "TERM": "xterm"}
    process = subprocess.Popen(
        compress_command(config, tmp_path / "out"),
        stdout=subprocess.DEVNULL,
        stderr=follower,
        cwd=ROOT,
        env=env,
    )
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    assert process.wait() == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))  # no colours
    assert re.search(r"distill ━*[╸╺]?━* +\d+/\d+ epoch \d+/12, loss [\d.]+, top1 [\d.]+", text)


def test_compress_passes_lists_what_distillation_takes_first():
    from tests.helpers.cli import invoke

    listed = json.loads(invoke("passes", "--json").stdout)["distill"]["params"]
    assert [p["name"] for p in listed][:3] == ["teacher", "student", "temperature"]
    assert listed[0]["type"] == "Path | TeacherModel | None"  # no module paths
    table = invoke("passes").stdout
    assert "[teacher" in table  # brackets in descriptions are not taken for rich markup
