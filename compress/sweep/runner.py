"""Running a sweep: each variant is `compress run MODEL -c CONFIG --set ...` in a worker process
of its own (the batch's workers and executors: locally with --jobs, or on Ray), writing
OUT/variants/<name>/. That the model and config fit is checked first, in a child forked from
the warm server the local workers come from, so the sweep's own process never imports torch.
The variants share the stage cache, so the stages they have in common are computed once. Each
finished variant leaves done.json (its row, with the hashes of the model and the config);
--resume keeps the finished ones whose hashes and outputs still match and runs the rest. When
every variant has ended, OUT/sweep.json, sweep.md and sweep.html are written, and the best
variant's model.onnx and reports are copied to OUT.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from compress.batch import warm
from compress.batch.executors import LocalExecutor, threads_per_job
from compress.batch.job import ModelJob
from compress.batch.runner import (
    COMPLETE,
    cache_options,
    check_cache_options,
    check_resumable_folder,
    job_problems,
    make_executor,
    one_writer,
    refuse_first,
)
from compress.batch.summary import Status
from compress.cache.keys import inputs_digest
from compress.errors import EXIT_FAILED, EXIT_GATE_FAILED, EXIT_OK, ModelLoadError
from compress.files import file_sha256, path_problem
from compress.job.outdir import OUTPUT_FILES
from compress.job.staging import (
    StagingArea,
    check_folders,
    is_regular,
    make_folders,
    write_atomically,
)
from compress.measure.metrics import LOWER_IS_BETTER
from compress.passes.recipe import load_recipe
from compress.records import Record
from compress.sweep.grid import MAX_VARIANTS, Variant, check_variants, grid
from compress.sweep.pareto import OBJECTIVES, Objective, Point, best, front

DONE_NAME = "done.json"
SWEEP_FILES = ("sweep.json", "sweep.md", "sweep.html")
SCHEMA_VERSION = 1


class VariantRow(Record):
    """One variant of the sweep: its settings, how its run ended, and its final stage's
    figures (size, p50 at the first batch size, metric) where it produced a model."""

    name: str
    settings: dict[str, str] = Field(description="the --set KEY: VALUE texts of this variant")
    status: Status
    reason: str | None
    exit_code: int | None
    seconds: float | None
    size_bytes: int | None
    p50_ms: float | None
    metric: float | None
    accuracy_drop: float | None
    speedup: float | None
    failed_gates: list[str]
    front: list[Literal["latency", "size"]] = Field(
        description="the Pareto fronts it is on: accuracy against latency, against size"
    )
    reused: bool = Field(description="--resume found it done and kept it")
    model_sha256: str
    config_sha256: str
    inputs_sha256: str = Field(
        description="everything else the variant read: data, architectures, code versions"
    )


class SweepSummary(Record):
    """sweep.json."""

    schema_version: int = SCHEMA_VERSION
    model: str
    config: str
    objective: Objective
    metric: str | None = Field(description="the metric the variants were judged by")
    batch: int = Field(description="the batch size p50_ms is at")
    executor: str
    jobs: int
    seconds: float
    variants: list[VariantRow]
    fronts: dict[str, list[str]] = Field(description="latency, size: the names on each front")
    best: str | None = Field(description="copied to OUT/model.onnx; none: no variant passed")
    exit_code: int


@dataclass
class SweepOptions:
    model: Path
    config: Path
    out_dir: Path
    vary: list[str]
    jobs: int = 1
    executor: str = "local"
    ray_address: str | None = None
    objective: str = "latency"
    resume: bool = False
    force: bool = False
    timeout: float | None = None  # seconds per variant
    cache_dir: Path | None = None
    no_cache: bool = False
    trust_pickle: bool = False
    debug: bool = False
    max_variants: int = MAX_VARIANTS


def run_sweep(options: SweepOptions, variants: list[Variant], progress=None) -> SweepSummary:
    """Run the `variants` (from check_sweep), write the outputs, return the summary."""
    started = time.monotonic()
    out = options.out_dir.resolve()
    with make_executor(options) as executor, one_writer(out):
        threads = threads_per_job(*executor.cores(), options.jobs)
        for name in (*SWEEP_FILES, *OUTPUT_FILES):
            (out / name).unlink(missing_ok=True)
        rows = _run_variants(variants, options, out, threads, executor, progress)
        summary = _summary(rows, options, executor.name, time.monotonic() - started, out)
        _write(out, summary)
    return summary


def check_sweep(options: SweepOptions) -> list[Variant]:
    """The variants to run; InputError (exit 2) before any work for bad arguments, a bad --vary,
    or a model and config that do not fit together."""

    model_problem = path_problem(options.model, "a model file")
    problems = [
        (model_problem is not None, f"model {options.model}: {model_problem}"),
        *job_problems(options, "--timeout-per-variant"),
        (options.objective not in OBJECTIVES, f"--objective: choose {', '.join(OBJECTIVES)}"),
        (options.resume and options.force, "--resume and --force: pass one of them"),
        (options.max_variants < 1, "--max-variants must be 1 or more"),
    ]
    refuse_first(problems)
    check_resumable_folder(options.out_dir, options.resume, options.force, "sweep", "variant")
    variants = grid(options.vary, options.max_variants)
    check_variants(options.config, variants)
    for variant in variants:  # a link planted in OUT is refused before anything is written
        check_folders(options.out_dir, Path("variants") / variant.name)
    check_cache_options(options)
    check_fit(options)
    return variants


def check_fit(options: SweepOptions) -> None:
    """Refuse a model and config that do not fit, as `compress run` would before any work.
    Loading the model imports torch: that happens in a warm child, and the child's error is
    raised here. It gets the threads a local variant will get, so that the variants are forked
    from the same server, already started."""
    model, config = str(options.model), str(options.config)
    arguments = [model, config, options.trust_pickle]
    if not warm.available():
        model_fits(model, config, options.trust_pickle)
        return
    threads = threads_per_job(*LocalExecutor(options.jobs).cores(), options.jobs)
    try:
        warm.call("compress.sweep.runner:model_fits", arguments, threads)
    except warm.ChildDied as e:  # a model whose loading crashes the process, say
        raise ModelLoadError(
            f"cannot check {options.model} against {options.config}: {e}; `compress run` with "
            "--debug shows where"
        ) from None


def model_fits(model: str, config: str, trust_pickle: bool) -> None:
    """The InputError that `compress run MODEL -c CONFIG` would refuse them with, if any."""
    from compress.job.preflight import prepare

    job = prepare(Path(model), Path(config), trust_pickle, lambda m: None)
    shutil.rmtree(job.context.workdir, ignore_errors=True)


def _run_variants(
    variants, options, out: Path, threads: int, executor, progress
) -> list[VariantRow]:
    shared = {
        "model_sha256": file_sha256(options.model),
        "config_sha256": file_sha256(options.config),
    }
    run_options = cache_options(options)
    if load_recipe(options.config).config.report.threads > threads:  # jobs share the cores
        run_options += ["--set", f"report.threads={threads}"]
    rows: dict[str, VariantRow] = {}
    pending: dict[str, tuple[ModelJob, Variant]] = {}
    hashes: dict[str, dict[str, str]] = {}
    for variant in variants:
        folder = make_folders(out, Path("variants") / variant.name)
        config = load_recipe(options.config, variant.overrides)
        read = {"inputs_sha256": inputs_digest(options.model, config)}
        hashes[variant.name] = shared | read
        previous = _finished(folder, variant, hashes[variant.name]) if options.resume else None
        if previous is not None:
            rows[variant.name] = previous.model_copy(update={"reused": True})
            continue
        (folder / DONE_NAME).unlink(missing_ok=True)
        sets = [part for text in variant.overrides for part in ("--set", text)]
        job = ModelJob(
            variant.name,
            str(options.model.resolve()),
            str(options.config.resolve()),
            str(folder),
            threads,
            options.timeout,
            options.trust_pickle,
            options.debug,
            options=(*sets, *run_options),
        )
        pending[variant.name] = (job, variant)
    if progress is not None:
        progress.planned(len(variants))
        for row in rows.values():
            progress.finished(row)

    def done(job: ModelJob, outcome: dict) -> None:
        row = _row(pending[job.relative][1], outcome, Path(job.out_dir), hashes[job.relative])
        write_atomically(Path(job.out_dir) / DONE_NAME, json.dumps(row.written(), indent=2) + "\n")
        rows[job.relative] = row
        if progress is not None:
            progress.finished(row)

    executor.run([job for job, _ in pending.values()], done)
    return [rows[variant.name] for variant in variants]


def _finished(folder: Path, variant: Variant, hashes: dict[str, str]) -> VariantRow | None:
    """The variant's row when its done.json says it finished with these settings and inputs, and
    its outputs are all there."""
    try:
        row = VariantRow.read(json.loads((folder / DONE_NAME).read_text()))
    except (OSError, ValueError, RecursionError):
        return None
    same = row.settings == dict(variant.settings) and all(
        getattr(row, key) == value for key, value in hashes.items()
    )
    complete = all(is_regular(folder / name) for name in OUTPUT_FILES)
    return row if same and complete and row.status in COMPLETE else None


def _row(variant: Variant, outcome: dict, folder: Path, hashes: dict[str, str]) -> VariantRow:
    """The variant's row, from its worker's outcome and its report."""
    figures: dict = {"size_bytes": None, "p50_ms": None, "metric": None, "failed_gates": []}
    if outcome["status"] in COMPLETE:
        from compress.report.compare import load_report

        report = load_report(folder / "report.json")
        final = report.final
        figures = {
            "size_bytes": final.size_bytes,
            "p50_ms": final.figure(report.batch_sizes[0]).p50,
            "metric": final.metric.value if final.metric else None,
            "failed_gates": [g.name for g in report.gates if not g.passed],
        }
    return VariantRow(
        name=variant.name,
        settings=dict(variant.settings),
        status=outcome["status"],
        reason=outcome.get("reason"),
        exit_code=outcome.get("exit_code"),
        seconds=outcome.get("seconds"),
        accuracy_drop=outcome.get("accuracy_drop"),
        speedup=outcome.get("speedup"),
        front=[],
        reused=False,
        **figures,
        **hashes,
    )


def _summary(rows: list[VariantRow], options, executor: str, seconds: float, out: Path):
    settings = load_recipe(options.config).config.report
    measured = [r for r in rows if r.status in COMPLETE and r.p50_ms is not None]
    # the fronts rank accuracy higher-better: perplexity (lower better) enters negated
    sign = -1 if settings.metric in LOWER_IS_BETTER else 1
    points = [
        Point(
            r.name,
            r.p50_ms,
            r.size_bytes,
            None if r.metric is None else sign * r.metric,
            passed=r.status == "ok",
        )
        for r in measured
        if r.p50_ms is not None and r.size_bytes is not None  # a measured variant has both
    ]
    fronts = {"latency": front(points, "p50_ms"), "size": front(points, "size_bytes")}
    rows = [
        row.model_copy(update={"front": [f for f, names in fronts.items() if row.name in names]})
        for row in rows
    ]
    chosen = best(points, options.objective)
    if chosen is not None:
        code = EXIT_OK
    elif measured:
        code = EXIT_GATE_FAILED
    else:
        code = EXIT_FAILED
    return SweepSummary(
        model=str(options.model),
        config=str(options.config),
        objective=options.objective,
        metric=settings.metric if any(r.metric is not None for r in measured) else None,
        batch=settings.batch_sizes[0],
        executor=executor,
        jobs=options.jobs,
        seconds=round(seconds, 2),
        variants=rows,
        fronts=fronts,
        best=chosen,
        exit_code=code,
    )


def _write(out: Path, summary: SweepSummary) -> None:
    """sweep.json, .md and .html, and the best variant's model and reports, placed together."""
    from compress.job.interrupts import uninterrupted
    from compress.sweep.render import sweep_html, sweep_markdown

    with StagingArea(out, "-o") as area:
        area.add_text("sweep.json", json.dumps(summary.written(), indent=2) + "\n")
        area.add_text("sweep.md", sweep_markdown(summary))
        area.add_text("sweep.html", sweep_html(summary))
        if summary.best is not None:
            chosen = out / "variants" / summary.best
            for name in OUTPUT_FILES:
                if os.path.lexists(chosen / name):  # a link there is refused, not followed
                    area.add_copy(name, chosen / name)
        with uninterrupted(commit=True):
            area.place()
