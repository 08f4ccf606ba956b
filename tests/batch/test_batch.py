"""`compress batch` end to end: bad models are survived and reported, a killed batch resumes to
the same result, a hang is stopped, and the same jobs run as Ray tasks."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import yaml

from tests.helpers.batch import (
    batch_config,
    corrupt_model,
    fewer_samples,
    good_models,
    misbehaving_model,
    statuses,
    summary_of,
)
from tests.helpers.cli import invoke
from tests.helpers.paths import ROOT
from tests.helpers.probes import processes_using


def batch_command(models, config, out) -> list[str]:
    return [
        sys.executable,
        "-m",
        "compress_cli",
        "batch",
        str(models),
        "-c",
        str(config),
        "-o",
        str(out),
    ]


def test_good_models_finish_while_a_corrupt_file_and_a_crash_are_reported(tmp_path):
    models, out = tmp_path / "models", tmp_path / "out"
    good_models(models, "a.onnx", "vision/b.onnx")
    (models / "vision" / "b.yaml").write_text("gates: {min_size_ratio: 100}\n")  # override
    corrupt_model(models / "cut.pt2")
    misbehaving_model(models, "crash.pt", "segfault")
    (models / "notes.txt").write_text("not a model")
    config = batch_config(tmp_path / "cfg")

    result = invoke("batch", models, "-c", config, "-o", out, "-j", "2", "--trust-pickle", "--json")

    assert result.exit_code == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary == summary_of(out)
    found = statuses(summary)
    assert sorted(found) == ["a.onnx", "crash.pt", "cut.pt2", "vision/b.onnx"]  # no notes.txt
    assert found["a.onnx"] == ("ok", None)
    assert found["vision/b.onnx"] == ("gate_failed", "gate failed: min_size_ratio")
    assert found["cut.pt2"][0] == "failed" and "truncated or corrupt" in found["cut.pt2"][1]
    assert found["crash.pt"] == ("failed", "the worker process died from SIGSEGV")
    assert summary["counts"] == {"ok": 1, "gate_failed": 1, "failed": 2, "timed_out": 0}
    for done in ("a.onnx", "vision/b.onnx"):
        assert {"model.onnx", "report.json", "report.md", "done.json"} <= {
            p.name for p in (out / done).iterdir()
        }
    assert not (out / "crash.pt" / "model.onnx").exists()
    assert "Segmentation fault" in (out / "crash.pt" / "log.txt").read_text()
    # Each job had its share of the cores, and its report says what latency ran with.
    threads = summary["threads_per_job"]
    assert threads == max(1, summary["cores"] // 2)
    report = json.loads((out / "a.onnx" / "report.json").read_text())
    assert report["environment"]["threads"] <= threads
    with open(out / "summary.csv") as f:
        rows = {row["model"]: row for row in csv.DictReader(f)}
    assert rows["crash.pt"]["status"] == "failed" and rows["a.onnx"]["size_ratio"]
    assert "| cut.pt2 | failed |" in (out / "summary.md").read_text()


def test_a_killed_batch_resumes_to_the_uninterrupted_result(tmp_path):
    models, config = tmp_path / "models", batch_config(tmp_path / "cfg")
    good_models(models, "m1.onnx", "m2.onnx", "m3.onnx")
    corrupt_model(models / "cut.pt")
    out = tmp_path / "out"
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the work folders SIGKILL leaves behind
    command = batch_command(models, config, out) + ["-j", "1", "-q"]
    batch = subprocess.Popen(command, cwd=ROOT, env=env)
    first, deadline = out / "m1.onnx" / "done.json", time.monotonic() + 300
    while not first.exists() and batch.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    batch.send_signal(signal.SIGKILL)
    batch.wait()
    assert not processes_using(out), "the killed batch left its worker running"
    assert not (out / "summary.json").exists()
    marker = first.read_bytes()

    result = invoke("batch", models, "-c", config, "-o", out, "--resume", "-j", "2", "--json")
    resumed = json.loads(result.stdout)
    reference = invoke("batch", models, "-c", config, "-o", tmp_path / "whole", "-j", "2")

    assert result.exit_code == reference.exit_code == 1, result.stderr  # cut.pt fails
    assert statuses(resumed) == statuses(summary_of(tmp_path / "whole"))
    redone = {row["model"] for row in resumed["models"] if not row["reused"]}
    assert redone == {"m2.onnx", "m3.onnx", "cut.pt"}  # failures are tried again
    assert first.read_bytes() == marker

    # A changed config (an override for m3) is redone; the rest is reused.
    (models / "m3.yaml").write_text("report: {batch_sizes: [4]}\n")
    again = invoke("batch", models, "-c", config, "-o", out, "--resume", "--json")
    rows = {row["model"]: row for row in json.loads(again.stdout)["models"]}
    assert {m for m, row in rows.items() if not row["reused"]} == {"m3.onnx", "cut.pt"}
    report = json.loads((out / "m3.onnx" / "report.json").read_text())
    assert report["batch_sizes"] == [4]

    # Changed data is redone too (done.json covers every file a model's run read), and the jobs
    # use the batch's stage cache.
    fewer_samples(tmp_path / "cfg" / "digits_eval.npz")
    cache = tmp_path / "cache"
    data = invoke("batch", models, "-c", config, "-o", out, "--resume", "--cache-dir", cache)
    assert data.exit_code == 1, data.stderr
    assert not any(row["reused"] for row in summary_of(out)["models"])
    assert len(list((cache / "stages").iterdir())) >= 3  # each good model's baseline at least


def test_a_hanging_model_is_stopped_at_the_timeout_with_its_process(tmp_path):
    models, out = tmp_path / "models", tmp_path / "out"
    models.mkdir()
    misbehaving_model(models, "hang.pt", "hang")
    config = batch_config(tmp_path / "cfg")
    result = invoke(
        "batch", models, "-c", config, "-o", out, "--trust-pickle", "--timeout-per-model", "4"
    )
    assert result.exit_code == 1
    status, reason = statuses(summary_of(out))["hang.pt"]
    assert status == "timed_out" and "still running after 4 s" in reason
    assert not processes_using(out, grace=0)


def test_the_jobs_run_as_tasks_on_a_local_ray_runtime(tmp_path):
    models, out = tmp_path / "models", tmp_path / "out"
    good_models(models, "net/a.onnx")
    corrupt_model(models / "cut.pt2")
    config = batch_config(tmp_path / "cfg")
    command = batch_command(models, config, out) + ["--executor", "ray", "-j", "2", "--json"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert summary["executor"] == "ray"
    assert statuses(summary)["net/a.onnx"] == ("ok", None)
    assert statuses(summary)["cut.pt2"][0] == "failed"
    assert (out / "net" / "a.onnx" / "model.onnx").is_file()
    ran_with = yaml.safe_load((out / "net" / "a.onnx" / "config.yaml").read_text())
    assert ran_with["report"]["threads"] <= summary["threads_per_job"]
