"""`compress analyze`: which nodes int8 quantization hurts most, without compressing anything.

It loads the model and the config as `compress run` does (and refuses the same inputs), exports
the model as loaded, quantizes it once the way the config's int8 pass would, ranks every
quantized node by the error it adds (compress.quant.sensitivity), and writes OUT/sensitivity.json,
sensitivity.md and sensitivity.html. No quantized model is kept. The config's other passes do
not run: pruning or distillation first would change the model the ranking is about.

quantize.auto has no single quantization; its static per-channel candidate is analysed when
data.calibration exists and the graph has Conv, MatMul or Gemm nodes, else its dynamic one (the
first two candidates auto itself tries).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field

from compress.errors import ConfigError
from compress.job.outdir import OutputFolder
from compress.job.preflight import Job, prepare
from compress.passes.base import Pass
from compress.quant.fallback import AUTO_PREFERENCE
from compress.quant.sensitivity import SensitivityDetails
from compress.records import Record

ANALYZE_FILES = ("sensitivity.json", "sensitivity.md", "sensitivity.html")
INT8_TYPES = ("quantize.static", "quantize.dynamic", "quantize.auto")


class AnalysedPass(Record):
    """The int8 pass whose quantization was analysed."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    type: str
    origin: str = Field(alias="from", description="where it is in the config")
    settings: dict[str, Any]


class AnalysisMetric(Record):
    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    name: str
    float_value: float = Field(alias="float")
    quantized: float
    drop: float


class Analysis(Record):
    """What sensitivity.json holds."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    schema_version: int = 1
    model_file: str
    config_file: str
    analysed: AnalysedPass = Field(alias="pass")
    notes: list[str]
    sensitivity: SensitivityDetails
    metric: AnalysisMetric | None = None


def analyze(
    model_path: Path,
    config_path: Path,
    out_dir: Path,
    force: bool = False,
    trust_pickle: bool = False,
    log: Callable[[str], None] = lambda m: None,
    overrides: Sequence[str] = (),
    trust_remote_code: bool = False,
) -> Analysis:
    """Write OUT/sensitivity.json, .md and .html (all or none, like `compress run`'s results);
    returns what sensitivity.json holds. A model folder runs its own code only with
    `trust_remote_code`."""
    from compress.job.inputs import run_inputs
    from compress.job.pipeline import temp_space_errors
    from compress.report.sensitivity import analysis_html, analysis_markdown

    outputs = OutputFolder(Path(out_dir), force, files=ANALYZE_FILES)
    outputs.check()
    try:
        job = prepare(
            Path(model_path), Path(config_path), trust_pickle, log, False, overrides,
            trust_remote_code,
        )  # fmt: skip
        try:
            outputs.refuse_overwriting(run_inputs(Path(model_path), job.config))
            index, int8 = analysed_pass(job.passes)
            outputs.clear_previous()
            with temp_space_errors():
                result = _analyze(job, index, int8)
            texts = {
                "sensitivity.json": json.dumps(result.written(), indent=2) + "\n",
                "sensitivity.md": analysis_markdown(result),
                "sensitivity.html": analysis_html(result),
            }
            outputs.stage(None, texts)
        finally:
            shutil.rmtree(job.context.workdir, ignore_errors=True)
        outputs.commit()
        return result
    finally:
        outputs.close()


def analysed_pass(passes: list[Pass]) -> tuple[int, Pass]:
    """The config's first int8 pass and its index; bad input when it has none."""
    for index, p in enumerate(passes):
        if p.name in INT8_TYPES:
            return index, p
    raise ConfigError(
        "passes: compress analyze ranks the nodes an int8 pass quantizes, and the config has "
        f"none; add one of {', '.join(INT8_TYPES)}"
    )


def _analyze(job: Job, index: int, declared: Pass) -> Analysis:
    from compress.job.pipeline import baseline_onnx, seed_everything
    from compress.measure.evaluate import Judge
    from compress.quant.int8 import excluded_nodes, preprocess, quiet_root_logger
    from compress.quant.ranking import shared_sensitivity

    ctx = job.context
    seed_everything(job.config.config.seed)
    baseline = baseline_onnx(job)
    prepared = preprocess(baseline, ctx.workdir / "analyze.pre.onnx", ctx)
    int8, origin = _int8_pass(declared, index, prepared, ctx)
    ctx.log(f"quantizing once as {origin} would ({int8.name})")
    excluded = excluded_nodes(prepared, int8.params.exclude, int8.key)
    quantized = ctx.workdir / "analyze.int8.onnx"
    with quiet_root_logger():
        int8.settle(prepared, excluded, ctx)
        int8.quantize(prepared, quantized, excluded, ctx)
    sensitivity = shared_sensitivity(int8.job(baseline, prepared, excluded, ctx), quantized, ctx)
    result = Analysis(
        model_file=job.model.path.name,
        config_file=job.config.path.name,
        analysed=AnalysedPass(type=int8.name, origin=origin, settings=_settings(int8)),
        notes=_notes(job, index),
        sensitivity=sensitivity.details(limit=None),
    )
    if ctx.eval is not None:
        metric = job.config.config.report.metric
        output = ctx.judged_output
        reference = ctx.analysis.reference_outputs(baseline, ctx.eval, output, metric)
        judge = Judge(reference, ctx.eval, metric, output)
        value = judge.score(quantized)
        result.metric = AnalysisMetric(
            name=metric, float_value=judge.reference_value, quantized=value, drop=judge.drop(value)
        )
    quantized.unlink()
    return result


def _int8_pass(declared: Pass, index: int, prepared: Path, ctx) -> tuple[Pass, str]:
    """The pass whose quantization is analysed, and where it comes from in the config."""
    from compress.passes.registry import get_pass
    from compress.quant.auto import candidates_for

    where = f"passes[{index}]"
    if declared.name != "quantize.auto":
        return declared, where
    candidates = {c.name: c for c in candidates_for(prepared, ctx.calibration is not None)}
    if not candidates:
        raise ConfigError(
            f"{where}: quantize.auto has no int8 candidate for this model (no Conv, MatMul, Gemm, "
            "Gather, LSTM or Attention node); there is nothing to analyse"
        )
    name = next((n for n in AUTO_PREFERENCE if n in candidates), next(iter(candidates)))
    candidate = candidates[name]
    pass_class = get_pass(candidate.pass_type)
    params = pass_class.Params(
        **candidate.settings, exclude=declared.params.exclude + candidate.float_nodes
    )
    return pass_class(params, where), f"{where}, quantize.auto's {name} candidate"


def _settings(int8: Pass) -> dict[str, Any]:
    skip = {"max_accuracy_drop", "max_fallback_steps", "on_slower"}
    return int8.params.model_dump(mode="json", exclude=skip)


def _notes(job: Job, index: int) -> list[str]:
    others = [p.name for i, p in enumerate(job.passes) if i != index]
    if not others:
        return []
    return [
        f"analysed the model as loaded; the config's other passes ({', '.join(others)}) "
        "were not run"
    ]
