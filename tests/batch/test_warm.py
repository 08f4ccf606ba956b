"""Warm workers: a batch's jobs are forked from one server that imported torch once, each set up
as a fresh worker was (its own process group, environment, threads, TMPDIR, stdio); a timeout
still kills all that a job started, a crash fails its job only, and a batch killed with SIGKILL
takes the server and its jobs with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from compress.batch import warm
from tests.helpers.batch import batch_config, statuses
from tests.helpers.cli import invoke
from tests.helpers.output import work_folders
from tests.helpers.paths import ROOT
from tests.helpers.probes import (
    alive,
    command_line,
    environment_of,
    parent_of,
    probe_model,
    wait_for_file,
)

pytestmark = pytest.mark.skipif(not warm.available(), reason="warm workers are Linux's")


def test_jobs_are_forked_from_one_warm_server_and_set_up_as_fresh_workers(tmp_path, monkeypatch):
    models, out, tmpdir = tmp_path / "models", tmp_path / "out", tmp_path / "tmp"
    facts = {name: tmp_path / f"{name}.json" for name in ("a.pt", "b.pt")}
    for name, path in facts.items():
        probe_model(models, name, "record", path)
    probe_model(models, "crash.pt", "segfault", tmp_path / "crash.json")
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))  # the workers' temporary folders go here
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))

    arguments = ("-o", out, "-j", "2", "--trust-pickle", "--debug", "--json")
    result = invoke("batch", models, "-c", batch_config(tmp_path / "cfg"), *arguments)

    summary = json.loads(result.stdout)
    threads = summary["threads_per_job"]
    first, second = (json.loads(path.read_text()) for path in facts.values())
    server = first["ppid"]
    assert second["ppid"] == server != os.getpid() and first["pid"] != second["pid"]
    assert parent_of(server) == os.getpid()
    assert command_line(server)[1:3] == ["-m", "compress.batch.server"]
    assert environment_of(server)["OMP_NUM_THREADS"] == str(threads)  # read as torch loaded
    assert "onnxruntime" not in Path(f"/proc/{server}/maps").read_text()  # it starts a thread
    for name, seen in zip(facts, (first, second), strict=True):
        assert seen["pgid"] == seen["sid"] == seen["pid"]  # a session and group of its own
        work = Path(seen["env"].pop("TMPDIR"))
        assert work.parent == tmpdir and work.name.startswith("compress-job-")
        assert seen["tempdir"].startswith(str(work))  # tempfile read the job's TMPDIR
        assert seen["env"] == {
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "OPENBLAS_NUM_THREADS": str(threads),
            "PYTHONFAULTHANDLER": "1",
        }
        assert seen["torch_threads"] == threads and seen["faulthandler"]
        log = out / name / "log.txt"
        assert seen["fds"] == [os.devnull, os.devnull, str(log)]
        assert "probe: written to descriptor 2" in log.read_text()
        assert seen["cwd"] == os.getcwd()
    assert work_folders(tmpdir) == []  # each job's TMPDIR was removed after it
    found = statuses(summary)
    assert found["a.pt"][0] == found["b.pt"][0] == "failed" and "probed" in found["a.pt"][1]
    assert found["crash.pt"] == ("failed", "the worker process died from SIGSEGV")
    assert "Segmentation fault" in (out / "crash.pt" / "log.txt").read_text()


def test_a_timeout_kills_everything_a_warm_job_started(tmp_path):
    models, out, facts = tmp_path / "models", tmp_path / "out", tmp_path / "hang.json"
    probe_model(models, "hang.pt", "hang_with_child", facts)
    config = batch_config(tmp_path / "cfg")
    arguments = ("-o", out, "--trust-pickle", "--timeout-per-model", "10", "--json")
    result = invoke("batch", models, "-c", config, *arguments)

    status, reason = statuses(json.loads(result.stdout))["hang.pt"]
    assert status == "timed_out" and "still running after 10 s" in reason
    seen = json.loads(facts.read_text())  # it was hanging, with a child of its own
    assert not alive(seen["pid"], grace=5)
    assert not alive(seen["grandchild"], grace=5)


def start_batch(tmp_path: Path, how: str) -> tuple[subprocess.Popen, dict]:
    """`compress batch` in a process of its own on one probe model, once the probe is running;
    what it saw."""
    models, out, facts = tmp_path / "models", tmp_path / "out", tmp_path / "probe.json"
    probe_model(models, "probe.pt", how, facts)
    config = batch_config(tmp_path / "cfg")
    command = [sys.executable, "-m", "compress_cli", "batch", str(models), "-c", str(config)]
    # a batch killed with SIGKILL cannot remove its jobs' work folders: they land in the test's
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    arguments = [*command, "-o", str(out), "--trust-pickle", "-q"]
    batch = subprocess.Popen(arguments, cwd=ROOT, env=env)
    try:
        wait_for_file(facts, batch)
    except BaseException:
        batch.kill()
        raise
    return batch, json.loads(facts.read_text())


def test_a_killed_batch_takes_its_warm_server_and_jobs_with_it(tmp_path):
    batch, seen = start_batch(tmp_path, "hang")
    server = seen["ppid"]
    try:
        assert server != batch.pid and parent_of(server) == batch.pid
    finally:
        batch.send_signal(signal.SIGKILL)
        batch.wait()
    assert not alive(server, grace=10), "the killed batch left its warm server running"
    assert not alive(seen["pid"], grace=10), "the killed batch left its job running"


def test_a_stopped_batch_kills_all_that_its_warm_jobs_started(tmp_path):
    batch, seen = start_batch(tmp_path, "hang_with_child")
    batch.send_signal(signal.SIGTERM)  # as Ctrl-C: the batch stops its jobs, then exits
    assert batch.wait(timeout=60) == 143
    assert not alive(seen["pid"], grace=5)
    assert not alive(seen["grandchild"], grace=5)  # its group was killed, not only the job
    assert not alive(seen["ppid"], grace=10)


def test_a_call_hands_back_its_value_or_its_exception_and_a_crash():
    threads = 1
    assert warm.call("os:getpgid", [0], threads) != os.getpgid(0)  # a group of its own
    with pytest.raises(FileNotFoundError, match="no-such-file"):
        warm.call("os:stat", ["/no-such-file"], threads)
    with pytest.raises(warm.ChildDied, match="died from SIGKILL"):
        warm.call("os:kill", [0, signal.SIGKILL], threads)  # kills its own group: itself
