"""The batch's parts without worker processes: which files are models, merged configs and their
hashes, outcomes and exit codes, and the arguments a batch refuses."""

from __future__ import annotations

import fcntl
import json
import signal
import sys

import pytest

from compress.batch.discover import find_models
from compress.batch.job import outcome_of
from compress.batch.overrides import config_sha256, merged_config, with_threads
from compress.batch.summary import exit_code
from tests.helpers.batch import batch_config, corrupt_model, good_models, statuses, summary_of
from tests.helpers.cli import assert_refused, invoke


def test_models_are_found_by_suffix_and_content(tmp_path):
    good_models(tmp_path, "b.onnx", "deep/er/a.pt2", "plain")  # "plain": ONNX without a suffix
    corrupt_model(tmp_path / "cut.pt")
    for name in ("notes.txt", "b.yaml", "arch.py", "data.npz", ".hidden.onnx", "blob.bin"):
        (tmp_path / name).write_text("not a model")
    (tmp_path / "out").mkdir()
    good_models(tmp_path, "out/old.onnx")  # the batch's own output folder is skipped

    found = {e.relative: e for e in find_models(tmp_path, None, (tmp_path / "out",))}

    assert list(found) == ["b.onnx", "cut.pt", "plain", "deep/er/a.pt2"]
    assert "truncated or corrupt" in found["cut.pt"].problem
    assert found["b.onnx"].problem is None and found["plain"].problem is None
    assert found["b.onnx"].overrides == (tmp_path / "b.yaml",)
    assert [e.relative for e in find_models(tmp_path, "*.pt2")] == ["deep/er/a.pt2"]
    assert [e.relative for e in find_models(tmp_path, "**/*.onnx")] == ["b.onnx", "out/old.onnx"]
    assert [e.relative for e in find_models(tmp_path, "er/*")] == ["deep/er/a.pt2"]


def test_the_folder_override_then_the_models_own_apply(tmp_path):
    good_models(tmp_path, "vision/a.onnx", "vision/b.onnx")
    (tmp_path / "vision" / "vision.yaml").write_text("gates: {min_size_ratio: 2}\n")
    (tmp_path / "vision" / "b.yml").write_text("gates: {min_size_ratio: 3}\n")
    found = {e.relative: e.overrides for e in find_models(tmp_path, None)}
    folder = tmp_path / "vision"
    assert found == {
        "vision/a.onnx": (folder / "vision.yaml",),
        "vision/b.onnx": (folder / "vision.yaml", folder / "b.yml"),
    }


def test_overrides_deep_merge_with_paths_relative_to_their_own_file(tmp_path):
    shared = batch_config(tmp_path / "shared")
    (tmp_path / "models").mkdir()
    override = tmp_path / "models" / "m.yaml"
    override.write_text(
        "model: {arch: nets/arch.py:Net}\n"
        "data: {eval: {path: local_eval.npz, labels: label}}\n"
        "passes: [{type: quantize.dynamic}, {type: t, teacher: big.pt2, student: {arch: s.py:S}}]\n"
        "report: {threads: 4}\n"
    )
    config = merged_config(shared, [override])
    assert config["model"]["arch"] == f"{tmp_path / 'models' / 'nets' / 'arch.py'}:Net"
    assert config["data"]["eval"] == {
        "path": str(tmp_path / "models" / "local_eval.npz"),
        "inputs": ["x"],  # kept from the shared config
        "labels": "label",
    }
    assert config["data"]["calibration"]["path"] == str(tmp_path / "shared" / "digits_calib.npz")
    assert config["passes"][0] == {"type": "quantize.dynamic"}  # a list replaces
    assert config["passes"][1]["teacher"] == str(tmp_path / "models" / "big.pt2")
    assert config["passes"][1]["student"]["arch"] == f"{tmp_path / 'models' / 's.py'}:S"
    assert config["report"]["batch_sizes"] == [8] and config["report"]["threads"] == 4
    assert with_threads(config, 2)["report"]["threads"] == 2
    assert with_threads(config, 8)["report"]["threads"] == 4


def test_config_hash_follows_content_not_layout(tmp_path):
    first, second, third = (tmp_path / f"{n}.yaml" for n in ("a", "b", "c"))
    first.write_text("version: 1\nreport: {threads: 1, batch_sizes: [8]}\n")
    second.write_text("# a comment\nreport:\n  batch_sizes: [8]\n  threads: 1\nversion: 1\n")
    third.write_text("version: 1\nreport: {threads: 1, batch_sizes: [4]}\n")
    hashes = [config_sha256(merged_config(p, [])) for p in (first, second, third)]
    assert hashes[0] == hashes[1] != hashes[2]


@pytest.mark.parametrize(
    ("found", "code"),
    [
        (["ok", "ok"], 0),
        (["ok", "gate_failed"], 3),
        (["gate_failed", "failed"], 1),
        (["ok", "timed_out"], 1),
    ],
)
def test_exit_code_of_a_batch(found, code):
    from compress.batch.summary import BatchRow

    def row(status: str) -> BatchRow:
        figures = ("reason", "exit_code", "size_ratio", "speedup", "accuracy_drop", "seconds")
        hashes = {"model_sha256": None, "config_sha256": None}
        return BatchRow(
            model="m", status=status, threads=1, output="m", reused=False,
            **dict.fromkeys(figures), **hashes,
        )  # fmt: skip

    assert exit_code([row(status) for status in found]) == code


def test_a_worker_outcome_names_its_reason(tmp_path):
    (tmp_path / "log.txt").write_text("· pass 0: quantize.static\nerror: passes[0] failed: boom\n")
    assert outcome_of(1, tmp_path) == {
        "status": "failed",
        "reason": "passes[0] failed: boom",
        "exit_code": 1,
    }
    killed = outcome_of(-signal.SIGKILL, tmp_path)
    assert killed["status"] == "failed" and "SIGKILL (out of memory?" in killed["reason"]
    from compress.report.model import Summary
    from tests.helpers.report_builders import hand_made_report, stage

    summary = Summary(
        size_ratio=3.7, gzip_ratio=4, speedup=2.5, speedup_batch=8, accuracy_drop=0.0,
        final_size_mb=0.3,
    )  # fmt: skip
    gate = {"name": "max_size_mb", "limit": 0.1, "value": 0.3, "passed": False}
    stages = [stage("baseline", 1000, {"8": 2.5}, 0.9), stage("q", 270, {"8": 1.0}, 0.9)]
    report = hand_made_report(stages, summary, gates=[gate], passed=False)
    (tmp_path / "report.json").write_text(json.dumps(report.written()))
    gated = outcome_of(3, tmp_path)
    assert gated["status"] == "gate_failed" and gated["reason"] == "gate failed: max_size_mb"
    assert gated["size_ratio"] == 3.7
    (tmp_path / "report.json").write_text('{"stages": []}')  # a worker that wrote nonsense
    broken = outcome_of(0, tmp_path)
    assert broken["status"] == "failed" and "not a compress report" in broken["reason"]
    assert gated["size_ratio"] == 3.7


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["-j", "0"], ["--jobs must be 1 or more"]),
        (["--executor", "spark"], ["--executor 'spark'", "local or ray"]),
        (["--ray-address", "auto"], ["--ray-address needs --executor ray"]),
        (["--resume", "--force"], ["pass one of them"]),
        (["--timeout-per-model", "0"], ["--timeout-per-model must be > 0"]),
        (["--pattern", "*.nothing"], ["no models found", "'*.nothing'"]),
    ],
)
def test_bad_arguments_are_refused(tmp_path, extra, needles):
    good_models(tmp_path / "models", "a.onnx")
    config, out = batch_config(tmp_path / "cfg"), tmp_path / "out"
    result = invoke("batch", tmp_path / "models", "-c", config, "-o", out, *extra)
    assert_refused(result, out, *needles)


def test_a_missing_folder_a_bad_config_and_a_used_output_are_refused(tmp_path):
    good_models(tmp_path / "models", "a.onnx")
    config, out = batch_config(tmp_path / "cfg"), tmp_path / "out"
    missing = invoke("batch", tmp_path / "nope", "-c", config, "-o", out)
    assert_refused(missing, out, "is not a folder of models")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nreport: {thread: 1}\n")
    assert_refused(invoke("batch", tmp_path / "models", "-c", bad, "-o", out), out, "report.thread")
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    used = invoke("batch", tmp_path / "models", "-c", config, "-o", out)
    assert used.exit_code == 2 and "--resume" in used.stderr and "--force" in used.stderr
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_one_batch_at_a_time_per_output_folder(tmp_path):
    good_models(tmp_path / "models", "a.onnx")
    config, out = batch_config(tmp_path / "cfg"), tmp_path / "out"
    out.mkdir()
    with open(out / ".batch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = invoke("batch", tmp_path / "models", "-c", config, "-o", out, "--resume")
    assert result.exit_code == 2 and "another batch or sweep is writing to" in result.stderr


def test_an_unreadable_override_fails_its_model_only(tmp_path):
    models, out = tmp_path / "models", tmp_path / "out"
    good_models(models, "a.onnx")
    corrupt_model(models / "cut.pt")
    (models / "a.yaml").write_text("report: [unclosed\n")
    result = invoke("batch", models, "-c", batch_config(tmp_path / "cfg"), "-o", out)
    assert result.exit_code == 1
    found = statuses(summary_of(out))
    assert found["a.onnx"][0] == "failed" and "a.yaml: not valid YAML" in found["a.onnx"][1]
    assert found["cut.pt"][0] == "failed"


def test_the_ray_executor_without_ray_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as when not installed
    good_models(tmp_path / "models", "a.onnx")
    config, out = batch_config(tmp_path / "cfg"), tmp_path / "out"
    result = invoke("batch", tmp_path / "models", "-c", config, "-o", out, "--executor", "ray")
    assert_refused(result, out, "needs Ray", "compress[ray]")
