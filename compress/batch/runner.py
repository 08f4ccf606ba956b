"""`compress batch`: compress every model under a directory, survive the bad ones, resume.

OUTDIR/<model's path under DIR>/ holds that model's outputs (model.onnx, report.json,
report.md from `compress run`), the config it ran with (config.yaml), its worker's log
(log.txt) and, written last, done.json: its row of the summary plus the content hashes of the
model file and of its merged config. A job's old done.json is removed before the job starts, so
a batch killed at any moment leaves every model either done (marker) or not (none); --resume
keeps the done ones whose hashes still match and whose outputs are complete (ok, gate failed),
and redoes the rest, failures included. The summaries are rebuilt from the rows each time.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from compress.batch.discover import ModelEntry, find_models
from compress.batch.executors import LocalExecutor, RayExecutor, threads_per_job
from compress.batch.job import ModelJob
from compress.batch.overrides import config_sha256, config_text, merged_config, with_threads
from compress.batch.summary import (
    BatchRow,
    BatchSummary,
    build_summary,
    remove_summary,
    write_summary,
)
from compress.errors import CompressError, InputError, ModelLoadError, OutputDirError
from compress.job.outdir import OUTPUT_FILES, check_folder_path
from compress.job.staging import is_regular, make_folders, write_atomically
from compress.models import model_sha256
from compress.passes.recipe import load_recipe, parse_recipe

DONE_NAME = "done.json"
CONFIG_NAME = "config.yaml"
LOCK_NAME = ".batch.lock"
EXECUTORS = ("local", "ray")
COMPLETE = ("ok", "gate_failed")  # their outputs exist; a failure is tried again on --resume


@dataclass
class BatchOptions:
    models_dir: Path
    config: Path
    out_dir: Path
    jobs: int = 1
    pattern: str | None = None
    resume: bool = False
    force: bool = False
    timeout: float | None = None  # seconds per model
    executor: str = "local"
    ray_address: str | None = None
    cache_dir: Path | None = None
    no_cache: bool = False
    trust_pickle: bool = False
    trust_remote_code: bool = False  # model folders' own code (auto_map)
    debug: bool = False


class JobOptions(Protocol):
    """The options a batch and a sweep share (BatchOptions, compress.sweep's SweepOptions):
    where their jobs run, how many at a time, for how long, with which stage cache."""

    jobs: int
    timeout: float | None
    executor: str
    ray_address: str | None
    cache_dir: Path | None
    no_cache: bool


class BatchProgress(Protocol):
    """What the batch tells its caller as it goes (the CLI draws a progress bar from it)."""

    def planned(self, total: int) -> None: ...

    def finished(self, row: BatchRow) -> None: ...


class Progress:
    """A BatchProgress that shows nothing."""

    def planned(self, total: int) -> None:
        pass

    def finished(self, row: BatchRow) -> None:
        pass


def run_batch(options: BatchOptions, progress: BatchProgress | None = None) -> BatchSummary:
    """Run the batch; write and return the summary. InputError (exit 2) before any work when
    the arguments, the shared config or the output folder are bad, or no model is found."""
    started, progress = time.monotonic(), progress or Progress()
    check_options(options)
    load_recipe(options.config)  # a bad shared config stops the batch, not each model
    out_dir = options.out_dir.resolve()
    entries = find_models(options.models_dir, options.pattern, (out_dir, options.config))
    if not entries:
        raise InputError(
            f"no models found under {options.models_dir}"
            + (f" matching --pattern {options.pattern!r}" if options.pattern else "")
            + "; point at the folder that holds them or change --pattern"
        )
    with make_executor(options) as executor, one_writer(out_dir):
        total_cores, largest_node = executor.cores()
        threads = threads_per_job(total_cores, largest_node, options.jobs)
        remove_summary(out_dir)
        rows = _run_entries(entries, options, out_dir, threads, executor, progress)
        settings = {
            "directory": str(options.models_dir),
            "config": str(options.config),
            "pattern": options.pattern,
            "executor": executor.name,
            "jobs": options.jobs,
            "cores": total_cores,
            "threads_per_job": threads,
            "timeout_per_model": options.timeout,
            "seconds": round(time.monotonic() - started, 2),
        }
        summary = build_summary([rows[entry.relative] for entry in entries], settings)
        write_summary(out_dir, summary)
    return summary


def _run_entries(
    entries: list[ModelEntry],
    options: BatchOptions,
    out_dir: Path,
    threads: int,
    executor: LocalExecutor | RayExecutor,
    progress: BatchProgress,
) -> dict[str, BatchRow]:
    """Every model's row: reused from its done.json, refused before a run, or run now."""
    rows: dict[str, BatchRow] = {}
    pending: dict[str, tuple[ModelJob, dict[str, Any]]] = {}
    progress.planned(len(entries))

    def record(job: ModelJob, outcome: dict[str, Any], hashes: dict[str, Any]) -> None:
        row = _row(job.relative, outcome, threads, hashes)
        try:
            make_folders(out_dir, Path(job.relative))
            marker = json.dumps(row.written(), indent=2) + "\n"
            write_atomically(Path(job.out_dir) / DONE_NAME, marker)
        except OutputDirError as e:  # no marker: the summary lists the model, --resume redoes it
            if row.status != "failed":
                row = row.model_copy(update={"status": "failed", "reason": str(e)})
        rows[job.relative] = row
        progress.finished(row)

    for entry in entries:
        job = ModelJob(
            entry.relative,
            str(entry.path),
            str(out_dir / entry.relative / CONFIG_NAME),
            str(out_dir / entry.relative),
            threads,
            options.timeout,
            options.trust_pickle,
            options.debug,
            options=tuple(cache_options(options))
            + (("--trust-remote-code",) if options.trust_remote_code else ()),
        )
        try:
            hashes, previous = _prepare(entry, job, options, out_dir)
        except CompressError as e:  # an unreadable model or override fails this model only
            record(job, {"status": "failed", "reason": str(e), "exit_code": e.exit_code}, {})
            continue
        if previous:
            rows[entry.relative] = previous
            progress.finished(previous)
        else:
            pending[entry.relative] = (job, hashes)
    executor.run(
        [job for job, _ in pending.values()],
        lambda job, outcome: record(job, outcome, pending[job.relative][1]),
    )
    return rows


def _prepare(
    entry: ModelEntry, job: ModelJob, options: BatchOptions, root: Path
) -> tuple[dict[str, str], BatchRow | None]:
    """(the model's content hashes, its row when --resume finds it done). A model to run has its
    old marker removed and its merged config written, ready for the worker."""
    if entry.problem:
        raise ModelLoadError(entry.problem)
    config = merged_config(options.config, entry.overrides)
    hashes = {
        "model_sha256": model_sha256(entry.path),
        "config_sha256": config_sha256(config),
        "inputs_sha256": inputs_sha256(entry.path, config, Path(job.config)),
    }
    out = Path(job.out_dir)
    previous = _read_marker(out / DONE_NAME)
    if previous is not None and options.resume and _still_done(previous, hashes, out):
        return hashes, previous.model_copy(update={"reused": True})
    (out / DONE_NAME).unlink(missing_ok=True)
    make_folders(root, Path(entry.relative))  # a link planted in OUTDIR is refused, not followed
    sources = [options.config.resolve(), *(o.resolve() for o in entry.overrides)]
    write_atomically(Path(job.config), config_text(with_threads(config, job.threads), sources))
    return hashes, None


def _still_done(previous: BatchRow, hashes: dict[str, str], out: Path) -> bool:
    return (
        previous.status in COMPLETE
        and all(getattr(previous, key) == value for key, value in hashes.items())
        and all(is_regular(out / name) for name in OUTPUT_FILES)
    )


def inputs_sha256(model: Path, config: dict[str, Any], path: Path) -> str:
    """The digest of everything the model's run reads but its config (data, architectures,
    code versions), its merged `config` read as if from `path` (its paths are absolute)."""
    from compress.cache.keys import inputs_digest

    loaded = parse_recipe(yaml.safe_dump(config, sort_keys=False), path)
    return inputs_digest(model, loaded)


def _read_marker(path: Path) -> BatchRow | None:
    """The row a done.json holds; None for none, or for one that is not a row (redone)."""
    try:
        return BatchRow.read(json.loads(path.read_text()))
    except (OSError, ValueError, RecursionError):  # pydantic's ValidationError is a ValueError
        return None


def _row(relative: str, outcome: dict[str, Any], threads: int, hashes: dict[str, str]) -> BatchRow:
    """One model's summary row, from its worker's outcome."""
    return BatchRow(
        model=relative,
        status=outcome["status"],
        reason=outcome.get("reason"),
        **{key: outcome.get(key) for key in ("exit_code", "size_ratio", "speedup")},
        **{key: outcome.get(key) for key in ("accuracy_drop", "seconds")},
        threads=threads,
        output=relative,
        reused=False,
        **{key: hashes.get(key) for key in ("model_sha256", "config_sha256", "inputs_sha256")},
    )


def cache_options(options: JobOptions) -> list[str]:
    """The `compress run` options that give each job the batch's or sweep's stage cache."""
    if options.no_cache:
        return ["--no-cache"]
    return ["--cache-dir", str(Path(options.cache_dir).resolve())] if options.cache_dir else []


def make_executor(options: JobOptions) -> LocalExecutor | RayExecutor:
    """Where the jobs of a batch or a sweep run: `options.executor`, `jobs` at a time."""
    if options.executor == "ray":
        return RayExecutor(options.jobs, options.ray_address)
    return LocalExecutor(options.jobs)


def check_options(options: BatchOptions) -> None:
    """Arguments and the output folder, before anything is read or started."""
    problems = [
        (not options.models_dir.is_dir(), f"{options.models_dir} is not a folder of models"),
        *job_problems(options, "--timeout-per-model"),
        (
            options.resume and options.force,
            "--resume keeps finished models and --force redoes them all; pass one of them",
        ),
    ]
    refuse_first(problems)
    if options.out_dir.resolve() == options.models_dir.resolve():
        raise OutputDirError("-o must not be the models' folder itself; choose another folder")
    check_resumable_folder(options.out_dir, options.resume, options.force, "batch", "model")
    check_cache_options(options)


def check_cache_options(options: JobOptions) -> None:
    """A --cache-dir that cannot be a cache, refused before any work (each job's run warns
    about a default cache it cannot use itself)."""
    from compress.cache.store import open_cache

    open_cache(options.cache_dir, options.no_cache, warn=lambda message: None)


def job_problems(options: JobOptions, timeout_option: str) -> list[tuple[bool, str]]:
    """(failed, message) for the options a batch and a sweep share: jobs, the timeout per job,
    the executor and its Ray address."""
    return [
        (options.jobs < 1, f"--jobs must be 1 or more, not {options.jobs}"),
        (options.timeout is not None and options.timeout <= 0, f"{timeout_option} must be > 0"),
        (
            options.executor not in EXECUTORS,
            f"--executor {options.executor!r}: choose {' or '.join(EXECUTORS)}",
        ),
        (
            options.ray_address is not None and options.executor != "ray",
            "--ray-address needs --executor ray",
        ),
    ]


def refuse_first(problems: list[tuple[bool, str]]) -> None:
    """InputError (exit 2) with the message of the first (failed, message) that failed."""
    for failed, message in problems:
        if failed:
            raise InputError(message)


def check_resumable_folder(out: Path, resume: bool, force: bool, run: str, item: str) -> None:
    """An output folder a batch or sweep (`run`) of `item`s may write: usable, and empty
    unless --resume or --force says what to do with what is there."""
    check_folder_path(out, "-o")
    leftovers = out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir())
    if leftovers and not (resume or force):
        raise OutputDirError(
            f"output folder {out} is not empty; pass --resume to finish the {run} there, "
            f"--force to redo every {item}, or choose another -o"
        )


@contextlib.contextmanager
def one_writer(out_dir: Path) -> Iterator[None]:
    """One batch or sweep at a time per output folder (the kernel drops the lock if it dies)."""
    import fcntl

    out_dir.mkdir(parents=True, exist_ok=True)
    try:  # never truncated, and a link planted at its name is refused, not followed
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        lock = os.open(out_dir / LOCK_NAME, flags, 0o666)
    except OSError as e:
        raise OutputDirError(
            f"cannot open the lock {out_dir / LOCK_NAME} ({e.strerror}); remove it if it is a link"
        ) from None
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputDirError(
                f"another batch or sweep is writing to {out_dir}; wait for it to end or choose "
                "another -o"
            ) from None
        yield
    finally:
        os.close(lock)
