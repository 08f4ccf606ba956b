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
from pathlib import Path

from compress import __version__
from compress.cache.store import StageCache
from compress.errors import CompressError, InputError, PassError, first_line
from compress.job.context import Context
from compress.job.generation_check import check_cached_generation
from compress.job.outdir import OutputFolder
from compress.job.preflight import Checked, Job, check_config, job_from_facts, prepare_model
from compress.job.speed_guard import revert_if_slower
from compress.job.stage_reuse import (
    CachedFigures,
    CachedGeneration,
    CachedLatency,
    CacheMiss,
    StageFile,
    StageReuse,
)
from compress.job.text_data import with_tokens
from compress.measure.evaluate import Judge
from compress.measure.generation import CarriedGeneration, Generation, measure_generation
from compress.measure.latency import Carried, measure_latency
from compress.measure.memory import check_batch_memory
from compress.measure.peak_memory import peak_rss_mb
from compress.measure.perplexity import TOKEN_METRICS, scored_tokens
from compress.measure.size import Footprint, footprint
from compress.models import model_sha256
from compress.models.decoder_graph import POSITIONS_KEY
from compress.models.hf_folder import is_model_folder
from compress.models.run_files import run_inputs
from compress.passes.base import Pass, PassDetails, PassInput, PassResult
from compress.progress import ProgressDisplay, silent
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
from compress.torch.runnable import runnable

PARITY_SAMPLES = 64
# Weights freed past this are handed back at once (a collection, then malloc_trim): below it,
# what the sessions opened next would gain is less than the collection costs.
WORTH_COLLECTING = 64 * 2**20
EXAMPLE_BATCH = 4  # >= 2: an example batch of 1 makes torch.export fix the batch dimension


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
    cache: StageCache | None = None,
    trust_remote_code: bool = False,
) -> Report:
    """Run the job and write OUTDIR/model.onnx, report.json, report.md, report.html (and the
    gates as JUnit XML to `junit`); returns the report. `overrides` are `--set KEY=VALUE` texts
    applied to the config; with a `cache`, stages stored there by an earlier run with the same
    inputs are reused, and the stages computed are stored. The outputs appear together once
    everything has succeeded; a run that fails or is interrupted leaves none (see
    compress.job.outdir). A model folder runs code of its own only with `trust_remote_code`."""
    outputs = OutputFolder(Path(out_dir), force, junit)
    outputs.check()
    try:
        checked = check_config(Path(config_path), overrides)
        checked = with_tokens(checked, Path(model_path), trust_remote_code)
        reuse = _plan(Path(model_path), checked, cache, log)
        trust = (trust_pickle, trust_remote_code)
        job = _job(Path(model_path), checked, reuse, trust, log, progress)
        job.context.cache = reuse.cache
        try:
            outputs.refuse_overwriting(run_inputs(Path(model_path), job.config))
            outputs.clear_previous()
            with temp_space_errors():
                report, final = _work(job, reuse)
            texts = {"report.json": to_json(report), "report.md": to_markdown(report)}
            texts["report.html"] = to_html(report)
            outputs.stage(final, texts, junit_xml(report) if junit is not None else "")
        finally:
            shutil.rmtree(job.context.workdir, ignore_errors=True)
        outputs.commit()
        return report
    finally:
        outputs.close()


def _plan(
    model_path: Path, checked: Checked, cache: StageCache | None, log: Callable[[str], None]
) -> StageReuse:
    """Which stages come from the cache (none without one, or without the model file: loading
    it says what is wrong)."""
    config, passes, _ = checked
    if cache is None or not (model_path.is_file() or is_model_folder(model_path)):
        return StageReuse.plan(config, passes, model_path, None, None)
    return StageReuse.plan(config, passes, model_path, model_sha256(model_path), cache, log)


def _job(
    model_path: Path,
    checked: Checked,
    reuse: StageReuse,
    trust: tuple[bool, bool],
    log: Callable[[str], None],
    progress: ProgressDisplay,
) -> Job:
    """The job: without loading the model where the cache holds every torch stage and what the
    checks learned of the model, else loaded and checked. `trust`: (pickles, remote code)."""
    trust_pickle, trust_remote_code = trust
    if reuse.cache is None:
        return prepare_model(
            model_path, checked, trust_pickle, log, progress, trust_remote_code=trust_remote_code
        )
    workdir = Path(tempfile.mkdtemp(prefix="compress-"))
    sha256 = reuse.model_sha256
    try:
        facts = reuse.model_facts(workdir)
        if facts is not None and sha256 is not None:  # as a loaded model's check, from the graph
            wanted, baseline = checked[0].config.report.generation, reuse.fetched[0].path
            known_model = (model_path.name, facts.format, baseline, facts.positions)
            check_cached_generation(wanted, *known_model)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    if facts is not None and sha256 is not None:  # facts are cached under the model's hash
        log("every torch stage is in the stage cache: the model is not loaded")
        known = (facts, sha256, trust_pickle, workdir)
        return job_from_facts(model_path, checked, *known, log, progress, trust_remote_code)
    return prepare_model(
        model_path, checked, trust_pickle, log, progress, workdir, sha256, trust_remote_code
    )


def _work(job: Job, reuse: StageReuse) -> tuple[Report, Path]:
    """The report and the final ONNX file (in the job's work folder)."""
    stage_files = _run_stages(job, reuse)
    _let_go_of_model(job)
    provenance = _provenance(job)
    final = stage_files[-1].path
    props = provenance.written()
    if job.context.positions is not None:  # read back when the file is run or benched again
        props[POSITIONS_KEY] = str(job.context.positions)
    set_metadata(final, props)  # before measuring: the report sizes it as written
    return _measure(job, stage_files, provenance, reuse), final


def _let_go_of_model(job: Job) -> None:
    """Drop the loaded model (torch weights, or an ONNX input's ModelProto) once no torch pass
    is left to run (after the baseline's export, or after the last torch stage): every later
    step reads the ONNX files, and the weights would otherwise sit in memory beside every ONNX
    Runtime session the run opens (a 0.5B decoder's 2 GB)."""
    import gc

    freed = sum(_free_torch_weights(module) for module in (job.module, job.model.model))
    if job.model.is_onnx and job.model.model is not None:
        freed += job.model.model.ByteSize()  # the input's ModelProto, freed as it is dropped
    job.module = None
    job.model.model = None
    if freed >= WORTH_COLLECTING:  # a full collection costs ~0.2 s in a large process
        gc.collect()
        _return_freed_memory()


def _return_freed_memory() -> None:
    """glibc keeps freed blocks below its mmap threshold (a decoder's weight tensors) in the
    process's heap; hand them back, so that the sessions opened next are not counted on top of
    weights already let go. A no-op off glibc."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def _free_torch_weights(module) -> int:
    """Free the storage of a torch module's parameters and buffers, whoever still holds the
    tensor objects: the exporter's graph rewriter keeps the last graph it rewrote, and that
    graph the tensors of the exported weights (the 0.5B export kept its 2 GB to the end).
    Returns the bytes freed."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not isinstance(module, torch.nn.Module):
        return 0
    freed = 0
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            freed += tensor.numel() * tensor.element_size()
            tensor.data = torch.empty(0, dtype=tensor.dtype)
    return freed


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


def _run_stages(job: Job, reuse: StageReuse) -> list[StageFile]:
    """The ONNX file of every stage: baseline, one per torch pass, one per ONNX pass. Every
    stage starts from the run's seed, so a stage computes the same whether the ones before it
    were computed or reused from the cache."""
    try:
        return _stages(job, reuse)
    except CacheMiss:  # evicted by another process before any stage was computed: compute all
        reuse.skip_to = -1
        if not job.loaded:  # planned from the cache: load and check the model after all
            checked = (job.config, job.passes, job.context.datasets)
            context = job.context
            full = prepare_model(
                job.model.path, checked, context.trust_pickle, context.log, context.progress,
                context.workdir, job.model.sha256, context.trust_remote_code,
            )  # fmt: skip
            full.context.cache = context.cache
            vars(job).update(vars(full))
        return _stages(job, reuse)


def _stages(job: Job, reuse: StageReuse) -> list[StageFile]:
    ctx = job.context
    stages: list[StageFile] = []
    for step, index in enumerate(reuse.order):
        seed_everything(job.config.config.seed)
        stages.append(_stage(job, reuse, step, index, stages))
        if step == 0:  # the batch sizes fit in memory, before any pass works
            if all(p.stage != "torch" for p in job.passes):  # ONNX passes read the files
                _let_go_of_model(job)
            check_batch_memory(stages[0].path, ctx.samples(1), job.config.config.report.batch_sizes)
    return stages


def _stage(job: Job, reuse: StageReuse, step: int, index: int | None, before: list[StageFile]):
    """Stage `step` (the baseline, or pass `index`'s): from the cache, or computed and stored."""
    work = job.context.workdir
    if step <= reuse.skip_to:
        return reuse.reused(step, work)
    with reuse.computing(step, work) as found:
        if found is not None:
            return found
        if index is None:
            stage = _baseline(job)
        elif job.passes[index].stage == "torch":
            stage = _torch_stage(job, index, job.passes[index], before[-1].path)
        else:
            stage = _onnx_stage(job, index, job.passes[index], before[-1].path)
        reuse.store(step, stage)
        return stage


def _onnx_stage(job: Job, index: int, p: Pass, source: Path) -> StageFile:
    target = job.context.workdir / f"stage{index}.onnx"
    details = _apply(index, p, job.context, PassInput(source=source, target=target)).details
    reverted, details = _guard(p, source, target, job.context, details)
    return StageFile(p.name, target, reverted, details, p.fix_if_slower)


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
        from compress.models.onnx_files import save_onnx

        path = job.context.workdir / "baseline.onnx"
        save_onnx(job.model.model, path)
        return StageFile("baseline", path, model=job.facts)
    exported = _export_stage(job, runnable(job.model), "baseline", job.model.format)
    return StageFile("baseline", exported, model=job.facts)


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
    output_names = list(named_torch_outputs(module, [a[:1] for a in samples]))
    target = ctx.workdir / f"{tag}.onnx"
    ctx.log(f"export {tag} ({fmt}) -> ONNX opset {section.opset}")
    example = [a[:EXAMPLE_BATCH] for a in samples]
    note = export_to_onnx(
        module if fmt != "exported_program" else job.model.model,
        fmt,
        example,
        ctx.input_names,
        output_names,
        target,
        section,
    )
    if note:
        ctx.log(note)
    diff = check_parity(target, module, samples, section.parity_atol, ctx.sample_source)
    ctx.log(f"parity ok: max |onnx - torch| = {diff:.2e}")
    return target


def _measure(
    job: Job, stage_files: list[StageFile], provenance: Provenance, reuse: StageReuse
) -> Report:
    """Every stage's figures. Sizes and the metric of a reused stage as the cache has them; its
    latency too where it was timed on this machine, else timed now. The baseline is always timed
    now, with every stage computed in this run, so the report's speedups stay paired (through
    the baseline for a stage timed in an earlier run). What is measured now is stored with each
    stage's cache entry for the next run."""
    ctx, settings = job.context, job.config.config.report
    # sizes and MACs first: counting MACs runs a sample with the products' shapes as outputs,
    # best done before the timing sessions have come and gone (a 0.5B decoder's peak was there)
    prints = _footprints(stage_files, ctx.samples(1))
    paths = {stage_key(i, stage.name): stage.path for i, stage in enumerate(stage_files)}
    keys = list(paths)
    carried = _carried_timings(stage_files, keys, settings.batch_sizes)
    timed = {key: path for key, path in paths.items() if key not in carried}
    names = {key: stage.name for key, stage in zip(keys, stage_files, strict=True)}
    ctx.log("measuring latency of " + ", ".join(names[key] for key in timed))
    if carried:
        again = ", ".join(names[key] for key in carried)
        ctx.log(f"latency of {again}: as timed in an earlier run on this machine")
    samples = ctx.samples(max(settings.batch_sizes))
    latency = measure_latency(timed, samples, settings, carried, anchor=keys[0])
    for timings in latency.busy():
        ctx.log(f"latency at batch {timings.batch}: busy machine ({timings.machine.describe()})")
    generation, generated_before = None, {}
    if settings.generation:
        generated_before = _carried_generation(stage_files, keys, settings.generation.batch_sizes)
        generation = _generation(paths, names, samples, settings, ctx, generated_before)
    metrics = _metrics(stage_files, ctx, settings.metric)
    measured = (latency, carried, generation, generated_before)
    _keep_figures(reuse, stage_files, keys, prints, metrics, measured)
    by_stage = latency.by_stage()
    stages = [
        Stage(
            name=stage.name,
            **prints[i].model_dump(),
            latency_ms=by_stage[key],
            latency_from_cache=(key in carried) or None,
            threads=settings.threads,
            metric=metrics[i],
            reverted=stage.reverted,
            from_cache=stage.from_cache or None,
            details=stage.details,
            fix_if_slower=stage.fix_if_slower or None,
            slower_than_input=False,  # until build_report compares it with its input
            slower_at_batch_sizes=[],
        )
        for i, (stage, key) in enumerate(zip(stage_files, keys, strict=True))
    ]
    return build_report(
        stages,
        job.config.config,
        provenance,
        ctx.sample_source,
        ctx.output_names,
        ctx.judged_output,
        latency,
        generation,
    )


def _generation(paths, names, samples, settings, ctx: Context, carried) -> Generation:
    """Every stage's greedy generation (report.generation), prompted with the data's tokens;
    the `carried` stages' (by key, then batch size) as an earlier run on this machine timed
    them, compared through the baseline (the first of `paths`, timed again)."""
    wanted = settings.generation
    anchor = next(iter(paths))
    timed = {key: path for key, path in paths.items() if key not in carried}
    ctx.log(
        f"timing generation ({wanted.prompt_tokens}-token prompt, {wanted.new_tokens} new tokens) "
        "of " + ", ".join(names[key] for key in timed)
    )
    if carried:
        again = ", ".join(names[key] for key in carried)
        ctx.log(f"generation of {again}: as timed in an earlier run on this machine")

    def peak(path: Path, prompt, new_tokens: int) -> float | None:
        return peak_rss_mb(path, prompt, new_tokens, settings.threads)

    ids = samples[0] if samples and samples[0].dtype.kind in "iu" else None
    generation = measure_generation(timed, settings, ids, peak, carried, anchor)
    for timings in generation.busy():
        ctx.log(f"generation at batch {timings.batch}: busy machine")
    return generation


def _carried_timings(
    stage_files: list[StageFile], keys: list[str], batch_sizes: list[int]
) -> dict[str, dict[int, Carried]]:
    """The reused stages (never the baseline, the anchor) whose cache entry has a timing valid
    on this machine at these batch sizes."""
    return _carried(stage_files, keys, lambda figures: figures.latency, batch_sizes)


def _carried_generation(
    stage_files: list[StageFile], keys: list[str], batch_sizes: list[int]
) -> dict[str, dict[int, CarriedGeneration]]:
    """The reused stages (never the baseline) whose cache entry has a generation timed on this
    machine at these batch sizes."""
    return _carried(stage_files, keys, lambda figures: figures.generation, batch_sizes)


def _carried(stage_files, keys, timing_of, batch_sizes: list[int]) -> dict:
    carried = {}
    for stage, key in zip(stage_files[1:], keys[1:], strict=True):
        cached = timing_of(stage.figures) if stage.figures else None
        if cached is not None and (timing := cached.carried(batch_sizes)) is not None:
            carried[key] = timing
    return carried


def _keep_figures(reuse, stage_files, keys, prints, metrics, timings) -> None:
    """Store the figures of each stage with its cache entry, where they differ from what the
    entry holds: its footprint (not the final file's: it carries this run's metadata), its
    metric, and its latency and generation where timed now (or carried: still valid).
    `timings`: (latency, the stages it carried, generation or None, the stages it carried)."""
    if reuse.cache is None:
        return
    latency, carried, generation, generated_before = timings
    last = len(stage_files) - 1
    for step, (stage, key) in enumerate(zip(stage_files, keys, strict=True)):
        old = stage.figures or CachedFigures()
        timing = old.latency if key in carried else None
        if step > 0 and key not in carried:
            timing = CachedLatency.of(latency, key)
        generated = old.generation if key in generated_before else None
        if step > 0 and key not in generated_before and generation is not None:
            generated = CachedGeneration.of(generation, key)
        footprint_ = prints[step] if step < last else old.footprint
        figures = CachedFigures(
            footprint=footprint_, metric=metrics[step], latency=timing, generation=generated
        )
        if figures != old.model_copy(update={"measured_under": None}):
            reuse.annotate(step, figures)


def _footprints(stage_files: list[StageFile], one_sample) -> list[Footprint]:
    """Each stage's size, params, MACs and sparsity; a reused stage's from the cache, but the
    final file's always (it carries this run's metadata)."""
    last = len(stage_files) - 1
    return [
        stage.figures.footprint
        if i < last and stage.figures and stage.figures.footprint
        else footprint(stage.path, one_sample)
        for i, stage in enumerate(stage_files)
    ]


def _metrics(stage_files, ctx: Context, metric: str) -> list[Metric | None]:
    """The metric of every stage on data.eval against the baseline's outputs; a reused stage's
    value from the cache, where it was measured under the same report settings and data."""
    if ctx.eval is None:
        return [None] * len(stage_files)
    known = [stage.figures.metric if stage.figures else None for stage in stage_files]
    if all(known):
        return known
    from compress.quant.sensitivity.cache import AnalysisCache

    ctx.log(f"evaluating {metric} on {len(ctx.eval)} samples of data.eval")
    # the baseline's outputs, as a quantize pass on the baseline file already computed them
    reference = ctx.shared(AnalysisCache).reference_outputs(
        stage_files[0].path, ctx.eval, ctx.judged_output, metric
    )
    judge = Judge(reference, ctx.eval, metric, ctx.judged_output)
    values = [judge.reference_value] + [
        found.value if found else judge.score(stage.path)
        for stage, found in zip(stage_files[1:], known[1:], strict=True)
    ]
    labels = ctx.eval.labels
    tokens = scored_tokens(labels) if metric in TOKEN_METRICS and labels is not None else None
    return [Metric(name=metric, value=value, tokens=tokens) for value in values]


def _tokenizer_record(datasets: dict):
    """How text data was tokenized: data.eval's (the text the metric is judged on) first."""
    ordered = sorted(datasets.items(), key=lambda item: item[0] != "eval")
    return next((d.tokenizer for _, d in ordered if d.tokenizer), None)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators, so that a run can be repeated."""
    import random
    import sys

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    # torch only where it is imported: a run whose torch stages all come from the cache never
    # imports it (its generator starts from a fixed seed when something imports it later)
    if (torch := sys.modules.get("torch")) is not None:
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
        model_folder=job.model.folder,
        tokenizer=_tokenizer_record(job.context.datasets),
    )
