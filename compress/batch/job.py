"""One model's job: `compress run` in a worker process of its own, and the row it leaves.

A process per model is what lets a batch survive its models: a segfault, the kernel's OOM killer
or a hang (stopped at the timeout) ends that process only. A fresh Python spends seconds
importing torch, torch.export and the ONNX exporter before any work, so on Linux a local batch's
workers are forked from a warm server that imported them once (compress.batch.warm), and each
runs the CLI in the forked process; elsewhere, and in Ray's worker processes, a worker is a fresh
`python -m compress_cli run` started through `launch`. Either way the worker gets its share of
the cores through the usual thread variables, which torch and OpenMP read when they start (the
warm server is started with them, and tells torch again in each child); ONNX Runtime's latency
threads come from the job's config (`report.threads`). It runs in a process group of its own, so
a timeout kills everything it started, and it dies with the batch, even one killed by SIGKILL.
Its TMPDIR is a folder of its own that the batch removes when it ends, and a failed worker's
half-published results are removed too: a worker stopped by SIGKILL cleans up nothing itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.batch import warm
from compress.batch.warm import kill_group, thread_variables
from compress.errors import EXIT_GATE_FAILED, EXIT_OK, first_line
from compress.job.outdir import OUTPUT_FILES
from compress.job.staging import create_replacing, remove_leftovers

LOG_NAME = "log.txt"

_running: set[subprocess.Popen | warm.Child] = set()
_running_lock = threading.Lock()


@dataclass(frozen=True)
class ModelJob:
    """What a worker needs; plain strings, so that it travels to Ray workers as it is."""

    relative: str  # the model's path under the batch directory
    model: str
    config: str  # the model's merged config
    out_dir: str
    threads: int
    timeout: float | None = None
    trust_pickle: bool = False
    debug: bool = False  # tracebacks in the job's log.txt
    options: tuple[str, ...] = ()  # more `compress run` options (a sweep's --set, --cache-dir)


def cli_arguments(job: ModelJob) -> list[str]:
    """`compress ARGUMENTS` for the job's worker: `run` with the job's model, config and folder."""
    run = ["run", job.model, "-c", job.config, "-o", job.out_dir]
    run += ["--force", "--json"] + (["--trust-pickle"] if job.trust_pickle else [])
    run += ["--debug"] if job.debug else []
    return run + list(job.options)


def worker_command(job: ModelJob) -> list[str]:
    """A fresh worker's command: `compress run` through `launch`, which makes it die with us."""
    run = [sys.executable, "-m", "compress_cli", *cli_arguments(job)]
    return [sys.executable, "-m", "compress.batch.launch", str(os.getpid()), *run]


def run_cli(arguments: list[str]) -> None:
    """A warm worker's target: `compress ARGUMENTS` in its own process; exits with its code."""
    from compress_cli.main import app

    sys.argv = ["compress", *arguments]
    app(args=arguments, prog_name="compress")


def run_job(job: ModelJob, warm_worker: bool = False) -> dict[str, Any]:
    """Run the job's worker to its end (or its timeout); the model's row. Never raises.
    `warm_worker`: fork it from this process's warm server instead of starting a fresh one."""
    started = time.monotonic()
    try:
        outcome = _run_worker(job, warm_worker)
    except Exception as e:  # the worker could not start, or left no readable report
        outcome = {"status": "failed", "reason": f"{type(e).__name__}: {first_line(e)}"}
    return {"seconds": round(time.monotonic() - started, 2), **outcome}


def _run_worker(job: ModelJob, warm_worker: bool) -> dict[str, Any]:
    """The worker gets a temporary folder of its own, removed here when it ends: a worker killed
    at the timeout (SIGKILL, no cleanup of its own) would otherwise leave its work folder, as
    large as its model, in TMPDIR."""
    out_dir = Path(job.out_dir)
    work = tempfile.mkdtemp(prefix="compress-job-")
    env = {**os.environ, **thread_variables(job.threads), "TMPDIR": work}
    env["PYTHONFAULTHANDLER"] = "1"  # a segfault leaves its Python stack in log.txt
    try:
        with create_replacing(out_dir / LOG_NAME) as log:
            start = _start_warm if warm_worker else _start_fresh
            code = _wait_for(start(job, log, env), job.timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if code is None:
        outcome = {
            "status": "timed_out",
            "reason": f"still running after {job.timeout:g} s (--timeout-per-model); stopped",
            "exit_code": None,
        }
    else:
        outcome = outcome_of(code, out_dir)
    if outcome["status"] not in ("ok", "gate_failed"):
        remove_results(out_dir)  # what a killed worker could not clean up itself
    return outcome


def _start_fresh(job: ModelJob, log, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        worker_command(job),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,  # --json: the report lands in report.json too
        stderr=log,
        env=env,
        start_new_session=True,  # its own process group, killed as one
    )


def _start_warm(job: ModelJob, log, env: dict[str, str]) -> warm.Child:
    """The timeout counts from the request, as it counted from a fresh worker's start: the
    first jobs wait for the server's imports within it."""
    server = warm.server_for(job.threads)
    return server.start("compress.batch.job:run_cli", [cli_arguments(job)], env, log.fileno())


def _wait_for(process: subprocess.Popen | warm.Child, timeout: float | None) -> int | None:
    """Wait for the worker to end: its exit code, or None when it was stopped at the timeout."""
    with _running_lock:
        _running.add(process)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    finally:
        kill_group(process)  # anything it left behind in its group
        with _running_lock:
            _running.discard(process)


def remove_results(out_dir: Path) -> None:
    """A failed model's folder holds no results: not half a set, nor staged files."""
    remove_leftovers(out_dir)
    for name in OUTPUT_FILES:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            (out_dir / name).unlink()


def kill_running() -> None:
    """Stop every worker still running (the batch was interrupted)."""
    with _running_lock:
        running = list(_running)
    for process in running:
        kill_group(process)


def outcome_of(code: int, out_dir: Path) -> dict[str, Any]:
    """status, reason and the report's numbers, from the worker's exit code and its files."""
    if code in (EXIT_OK, EXIT_GATE_FAILED):
        from compress.errors import ReportFileError
        from compress.report.compare import load_report

        try:
            report = load_report(out_dir / "report.json")
        except ReportFileError as e:
            return {"status": "failed", "reason": f"its report: {e}", "exit_code": code}
        failed = [g.name for g in report.gates if not g.passed]
        summary = report.summary
        return {
            "status": "ok" if code == EXIT_OK else "gate_failed",
            "reason": f"gate failed: {', '.join(failed)}" if failed else None,
            "exit_code": code,
            "size_ratio": summary.size_ratio,
            "speedup": summary.speedup,
            "accuracy_drop": summary.accuracy_drop,
        }
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory? the kernel's OOM killer sends it)" if name == "SIGKILL" else ""
        reason = f"the worker process died from {name}{hint}"
    else:
        reason = _error_line(out_dir / LOG_NAME) or f"the worker exited with code {code}"
    return {"status": "failed", "reason": reason, "exit_code": code}  # < 0: killed by -code


def _error_line(log: Path) -> str | None:
    """The worker's one-line error (`error: ...`), without its prefix."""
    lines = log.read_text(errors="replace").splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    return errors[-1].removeprefix("error: ") if errors else None
