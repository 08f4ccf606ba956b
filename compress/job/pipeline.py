"""Runs a compression job: load, validate, run torch passes, export, run ONNX passes, measure,
report. Everything is checked before work starts; outputs appear only when the run succeeds."""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from compress import __version__
from compress.errors import CompressError, InputError, PassError, first_line
from compress.job.context import Context
from compress.job.inputs import run_inputs
from compress.job.outdir import OutputFolder
from compress.job.preflight import Job, prepare
from compress.job.progress import ProgressDisplay, silent
from compress.job.speed_guard import revert_if_slower
from compress.measure.evaluate import Judge
from compress.measure.latency import measure_latency
from compress.measure.memory import check_batch_memory
from compress.measure.size import footprint
from compress.passes.base import Pass, PassDetails, PassInput, PassResult
from compress.report import build_report, stage_key, to_json, to_markdown
from compress.report.ci import junit_xml
from compress.report.html import to_html
from compress.report.model import Metric, Provenance, Report, Stage
from compress.torch.export import (
    check_parity,
    export_to_onnx,
    named_torch_outputs,
    set_metadata,
)

PARITY_SAMPLES = 64
EXAMPLE_BATCH = 4  # >= 2: an example batch of 1 makes torch.export fix the batch dimension


@dataclass
class StageFile:
    """The ONNX file of one stage; `reverted` when the speed guard kept the pass's input;
    `details` what the pass says it did (candidates tried, nodes kept in float)."""

    name: str
    path: Path
    reverted: bool = False
    details: PassDetails | None = None
    fix_if_slower: str = ""  # what the report's slower-stage warning suggests


def run(
    model_path: Path,
    config_path: Path,
    out_dir: Path,
    force: bool = False,
    trust_pickle: bool = False,
    log: Callable[[str], None] = lambda m: None,
    progress: ProgressDisplay = silent,
    overrides: Sequence[str] = (),
    junit: Path | None = None,
) -> Report:
    """Run the job and write OUTDIR/model.onnx, report.json, report.md, report.html (and the
    gates as JUnit XML to `junit`); returns the report. `overrides` are `--set KEY=VALUE` texts
    applied to the config. The outputs appear together once everything has succeeded; a run
    that fails or is interrupted leaves none (see compress.job.outdir)."""
    outputs = OutputFolder(Path(out_dir), force, junit)
    outputs.check()
    try:
        job = prepare(Path(model_path), Path(config_path), trust_pickle, log, progress, overrides)
        try:
            outputs.refuse_overwriting(run_inputs(Path(model_path), job.config))
            outputs.clear_previous()
            with temp_space_errors():
                report, final = _work(job)
            texts = {"report.json": to_json(report), "report.md": to_markdown(report)}
            texts["report.html"] = to_html(report)
            outputs.stage(final, texts, junit_xml(report) if junit is not None else "")
        finally:
            shutil.rmtree(job.context.workdir, ignore_errors=True)
        outputs.commit()
        return report
    finally:
        outputs.close()


def _work(job: Job) -> tuple[Report, Path]:
    """The report and the final ONNX file (in the job's work folder)."""
    seed_everything(job.config.config.seed)
    stage_files = _run_stages(job)
    provenance = _provenance(job)
    final = stage_files[-1].path
    set_metadata(final, provenance.written())  # before measuring: the report sizes it as written
    return _measure(job, stage_files, provenance), final


@contextlib.contextmanager
def temp_space_errors():
    """A full disk under the work folder, however deep the library that hit it wrapped the
    OSError, as bad input (exit 2) that names the temporary folder and the fix: the same run
    would fail again, and the fix is in the environment, like a full output folder's."""
    try:
        yield
    except Exception as e:
        cause = _disk_full(e)
        if cause is None:
            raise
        reason = getattr(cause, "strerror", None) or first_line(cause)
        raise InputError(
            f"no space left in the temporary folder {tempfile.gettempdir()} ({reason}); free "
            "space on its disk or set TMPDIR to a folder on a larger one"
        ) from e


def _disk_full(error: BaseException | None) -> BaseException | None:
    """The innermost exception in `error`'s chain that says the disk is full, if any."""
    found, seen = None, set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or (
            "No space left on device" in str(error)
        ):
            found = error
        error = error.__cause__ or error.__context__
    return found


def _run_stages(job: Job) -> list[StageFile]:
    """The ONNX file of every stage: baseline, one per torch pass, one per ONNX pass."""
    ctx, work = job.context, job.context.workdir
    stages = [_baseline(job)]
    check_batch_memory(stages[0].path, ctx.samples(1), job.config.config.report.batch_sizes)
    for index, p in enumerate(job.passes):  # an ONNX input has none: preflight refuses them
        if p.stage == "torch":
            stages.append(_torch_stage(job, index, p, stages[-1].path))
    for index, p in enumerate(job.passes):
        if p.stage == "onnx":
            target = work / f"stage{index}.onnx"
            given = PassInput(source=stages[-1].path, target=target)
            details = _apply(index, p, ctx, given).details
            reverted, details = _guard(p, stages[-1].path, target, ctx, details)
            stages.append(StageFile(p.name, target, reverted, details, p.fix_if_slower))
    return stages


def _torch_stage(job: Job, index: int, p: Pass, source: Path) -> StageFile:
    """Apply a torch pass and export its stage; with `on_slower: revert`, a stage slower than
    `source` is replaced by it and the module as it was goes on to the next pass."""
    ctx, guard = job.context, p.on_slower == "revert"
    kept = copy.deepcopy(job.module) if guard else None
    given = PassInput(module=job.module, prepared=job.prepared.get(p.key))
    result = _apply(index, p, ctx, given)
    job.module, details = result.module, result.details
    onnx_file = _export_stage(job, job.module, f"{index}", "module")
    reverted, details = _guard(p, source, onnx_file, ctx, details)
    if reverted:
        job.module = kept
    return StageFile(p.name, onnx_file, reverted, details, fix_if_slower=p.fix_if_slower)


def _guard(
    p: Pass, source: Path, target: Path, ctx, details: PassDetails | None
) -> tuple[bool, PassDetails | None]:
    """With `on_slower: revert`, the speed guard on the stage (`target` against `source`):
    whether it reverted, and the details with what it found (`speed_guard`)."""
    if p.on_slower != "revert":
        return False, details
    guarded = revert_if_slower(source, target, ctx, p.name)
    details = details if details is not None else p.Details()
    details.speed_guard = guarded.note
    return guarded.reverted, details


def baseline_onnx(job: Job) -> Path:
    """The model as loaded, as an ONNX file in the job's work folder (`compress analyze`)."""
    return _baseline(job).path


def _baseline(job: Job) -> StageFile:
    """The model as loaded, as ONNX: an ONNX input as it is, a torch model exported."""
    if job.model.is_onnx:
        import onnx

        path = job.context.workdir / "baseline.onnx"
        onnx.save(job.model.model, str(path))
        return StageFile("baseline", path)
    return StageFile(
        "baseline", _export_stage(job, job.model.callable(), "baseline", job.model.format)
    )


def _apply(index: int, p: Pass, ctx: Context, given: PassInput) -> PassResult:
    """Run one pass; an unexpected exception becomes a PassError that names the pass. Details
    given as a dict (a plugin's) become the pass's Details record."""
    ctx.log(f"pass {index}: {p.name}")
    try:
        result = p.apply(given, ctx)
        if isinstance(result.details, dict):
            result.details = p.Details.model_validate(result.details)
        return result
    except CompressError:
        raise
    except Exception as e:
        raise PassError(f"passes[{index}] ({p.name}) failed: {first_line(e)}") from e


def _export_stage(job: Job, module, tag: str, fmt: str) -> Path:
    ctx, section = job.context, job.config.config.export
    samples = ctx.samples(PARITY_SAMPLES)
    named = named_torch_outputs(module, samples)
    reference, output_names = list(named.values()), list(named)
    target = ctx.workdir / f"{tag}.onnx"
    ctx.log(f"export {tag} ({fmt}) -> ONNX opset {section.opset}")
    example = [a[:EXAMPLE_BATCH] for a in samples]
    export_to_onnx(
        module if fmt != "exported_program" else job.model.model,
        fmt,
        example,
        ctx.input_names,
        output_names,
        target,
        section,
    )
    diff = check_parity(target, reference, samples, section.parity_atol, ctx.sample_source)
    ctx.log(f"parity ok: max |onnx - torch| = {diff:.2e}")
    return target


def _measure(job: Job, stage_files: list[StageFile], provenance: Provenance) -> Report:
    ctx, settings = job.context, job.config.config.report
    ctx.log("measuring latency of " + ", ".join(stage.name for stage in stage_files))
    paths = {stage_key(i, stage.name): stage.path for i, stage in enumerate(stage_files)}
    latency = measure_latency(paths, ctx.samples(max(settings.batch_sizes)), settings)
    for timings in latency.busy():
        ctx.log(f"latency at batch {timings.batch}: busy machine ({timings.machine.describe()})")
    metrics = _metrics(stage_files, ctx, settings.metric)
    one_sample = ctx.samples(1)
    by_stage = latency.by_stage()
    stages = [
        Stage(
            name=stage.name,
            **footprint(stage.path, one_sample),
            latency_ms=by_stage[key],
            threads=settings.threads,
            metric=metrics[i],
            reverted=stage.reverted,
            details=stage.details,
            fix_if_slower=stage.fix_if_slower or None,
            slower_than_input=False,  # until build_report compares it with its input
            slower_at_batch_sizes=[],
        )
        for i, (stage, key) in enumerate(zip(stage_files, paths, strict=True))
    ]
    return build_report(
        stages,
        job.config.config,
        provenance,
        ctx.sample_source,
        ctx.output_names,
        ctx.judged_output,
        latency,
    )


def _metrics(stage_files, ctx: Context, metric: str) -> list[Metric | None]:
    if ctx.eval is None:
        return [None] * len(stage_files)
    ctx.log(f"evaluating {metric} on {len(ctx.eval)} samples of data.eval")
    judge = Judge(stage_files[0].path, ctx.eval, metric, ctx.judged_output)
    values = [judge.reference_value] + [judge.score(stage.path) for stage in stage_files[1:]]
    return [Metric(name=metric, value=value) for value in values]


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators, so that a run can be repeated."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _provenance(job: Job) -> Provenance:
    overrides = job.config.overrides
    return Provenance(
        compress_version=__version__,
        model_file=job.model.path.name,
        config_file=job.config.path.name,
        # the file's bytes plus the --set overrides applied to it
        config_sha256=hashlib.sha256("\n".join([job.config.text, *overrides]).encode()).hexdigest(),
        config_overrides=" ".join(overrides) or None,
        model_sha256=job.model.sha256,
        source_format=job.model.format,
        passes=",".join(spec.type for spec in job.config.passes) or "none",
    )
