"""`compress bench`: measure one ONNX file the way `compress run` measures its stages (the same
latency code, settings, threads, warm-up and input), so that a figure in a report can be checked.

With the run's config, the samples are the run's; without one, the settings are the defaults
(both adjustable with --set) and the input is ones shaped like the graph's declared inputs.
A decoder exported with its key/value cache is also timed as it is used: greedy generation
(report.generation, its defaults where the config has none), as a run times its stages.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from compress.config import LoadedConfig, ModelSection, ReportSection
from compress.errors import ConfigError, ModelLoadError
from compress.files import path_problem
from compress.job.context import Context, input_names_for, load_datasets
from compress.job.generation_check import check_generation
from compress.job.preflight import check_batches_fit, check_onnx_data_fits
from compress.job.text_data import with_tokens
from compress.measure.decoder_feeds import is_decoder_proto
from compress.measure.environment import environment
from compress.measure.latency import latency_settings, measure_latency
from compress.measure.size import footprint
from compress.measure.speed import generation_timing
from compress.models import detect_format, load_model
from compress.models.hf_folder import is_model_folder
from compress.models.model_inputs import fixed_batch_sizes, onnx_input_specs
from compress.passes.recipe import load_recipe, parse_recipe
from compress.report import busy_latency, paired_figures
from compress.report.model import BenchComparison, BenchGeneration, BenchResult

DEFAULTS = Path("(defaults)")  # stands for the config file when none is given


def bench_onnx(
    model_path: Path,
    config_path: Path | None = None,
    overrides: Sequence[str] = (),
    compare: Path | None = None,
) -> BenchResult:
    """The file's footprint and latency per batch size, with the settings and the environment;
    with `compare`, a second file timed with it in alternation, and its speedup over the first
    per batch size (paired, with its 95% interval)."""
    model_path = Path(model_path)
    for path in (model_path, *([Path(compare)] if compare else [])):
        if is_model_folder(path) or (path.is_file() and detect_format(path) != "onnx"):
            raise ModelLoadError(
                f"{path}: compress bench measures ONNX files; this is a torch model: "
                "`compress run` exports it, then bench OUTDIR/model.onnx"
            )
        if problem := path_problem(path, "a model file"):  # a folder, a FIFO: said as such
            raise ModelLoadError(f"model {path}: {problem}")
    loaded = load_model(model_path, ModelSection(), Path.cwd())
    proto = loaded.model
    if compare:
        other = load_model(Path(compare), ModelSection(), Path.cwd()).model
        check_same_inputs(proto, other, model_path, Path(compare))
    config = _config(config_path, overrides, proto, model_path.name)
    settings = config.config.report
    check_generation(settings.generation, loaded)  # report.generation the file cannot give
    cached = is_decoder_proto(proto)
    timed_generation = generation_timing(settings, cached, loaded.positions)
    check_batches_fit(fixed_batch_sizes(proto), settings.batch_sizes)
    # text data: tokenized with model.tokenizer (an ONNX file holds no tokenizer)
    _, _, datasets = with_tokens((config, [], load_datasets(config)), None, False)
    # bench writes nothing: the context's workdir is never used
    ctx = Context(config, datasets, input_names_for(config, datasets), Path(tempfile.gettempdir()))
    check_onnx_data_fits(model_path, ctx)
    if compare:
        check_onnx_data_fits(Path(compare), ctx)
    samples = ctx.samples(max(settings.batch_sizes))
    paths = {"model": model_path} | ({"compare": Path(compare)} if compare else {})
    latency = measure_latency(paths, samples, settings)
    measured = BenchResult(
        model=str(model_path),
        **footprint(model_path, ctx.samples(1)).model_dump(),
        latency_ms=latency.by_stage()["model"],
        latency=latency_settings(settings, ctx.sample_source) | {"machine": latency.machine()},
        environment=environment(settings.threads, config.config.seed, settings.pin_threads),
        warnings=busy_latency(latency),
    )
    if timed_generation is not None:  # prompts from the data's tokens, where there are some
        data_ids = samples[0] if ctx.sample_source != "model.inputs" else None
        measured.generation, warnings = _generation(paths, timed_generation, data_ids)
        measured.warnings += warnings
    if compare:
        measured.compare = BenchComparison(
            model=str(compare),
            **footprint(Path(compare), ctx.samples(1)).model_dump(),
            latency_ms=latency.by_stage()["compare"],
            speedup={
                str(batch): paired_figures(timings.speedup("model", "compare"))
                for batch, timings in latency.batches.items()
            },
        )
    return measured


def _generation(
    paths: dict[str, Path], settings: ReportSection, ids: np.ndarray | None
) -> tuple[BenchGeneration, list[str]]:
    """Greedy generation of each file, in interleaved rounds (the first file the reference of
    the second's decode speedup), with each one's peak memory in a process of its own; and the
    warnings of a busy machine."""
    from compress.measure.generation import measure_generation
    from compress.measure.peak_memory import peak_rss_mb
    from compress.report.generation import busy_generation, generation_settings, stage_generation

    def peak(path: Path, prompt, new_tokens: int) -> float | None:
        return peak_rss_mb(path, prompt, new_tokens, settings.threads)

    ids = ids if ids is not None and ids.dtype.kind in "iu" else None
    generation = measure_generation(paths, settings, ids, peak)
    figures = stage_generation(generation, list(paths))
    measured = BenchGeneration(
        settings=generation_settings(generation), models=dict(zip(paths, figures, strict=True))
    )
    return measured, busy_generation(generation)


def _config(path: Path | None, overrides: Sequence[str], proto, model: str) -> LoadedConfig:
    """The run's config, or the defaults; without data, the inputs come from the graph."""
    config = (
        load_recipe(path, overrides) if path else parse_recipe("version: 1\n", DEFAULTS, overrides)
    )
    cfg = config.config
    has_data = any(getattr(cfg.data, role) for role in ("eval", "calibration", "train"))
    if not has_data and not cfg.model.inputs:
        specs = onnx_input_specs(proto)
        if specs is None:
            raise ConfigError(
                f"{model}: an input has a dtype or shape that model.inputs cannot declare, so "
                "none can be made up; give -c CONFIG with data.eval"
            )
        cfg.model.inputs = specs
    return config


def check_same_inputs(proto, other, path: Path, other_path: Path) -> None:
    """Two models compared must take the same inputs (names, types and ranks)."""

    def inputs(model) -> list[tuple]:
        initializers = {t.name for t in model.graph.initializer}
        return [
            (i.name, i.type.tensor_type.elem_type, len(i.type.tensor_type.shape.dim))
            for i in model.graph.input
            if i.name not in initializers
        ]

    if inputs(proto) != inputs(other):
        raise ConfigError(
            f"--compare: {other_path} takes other inputs than {path} "
            f"({[i[0] for i in inputs(other)]} vs {[i[0] for i in inputs(proto)]}); compare two "
            "versions of one model"
        )
