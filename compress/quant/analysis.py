"""What `compress analyze` computes: which nodes int8 quantization hurts most, on a model's
baseline ONNX file, quantized once the way the config's int8 pass would (the command itself,
which loads the model and writes the results, is compress.job.analyze).

quantize.auto has no single quantization; its static per-channel candidate is analysed when
data.calibration exists and the graph has Conv, MatMul or Gemm nodes, else its dynamic one (the
first two candidates auto itself tries).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, Field

from compress.errors import ConfigError
from compress.passes.base import Pass
from compress.quant.fallback import AUTO_PREFERENCE
from compress.quant.sensitivity import SensitivityDetails
from compress.quant.sensitivity.cache import AnalysisCache
from compress.records import Record

if TYPE_CHECKING:
    from compress.passes.context import PassContext
    from compress.quant.int8 import Int8Pass

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


def analysed_pass(passes: list[Pass]) -> tuple[int, Pass]:
    """The config's first int8 pass and its index; bad input when it has none."""
    for index, p in enumerate(passes):
        if p.name in INT8_TYPES:
            return index, p
    raise ConfigError(
        "passes: compress analyze ranks the nodes an int8 pass quantizes, and the config has "
        f"none; add one of {', '.join(INT8_TYPES)}"
    )


def analyse_int8(
    baseline: Path, declared: Pass, index: int, ctx: PassContext
) -> tuple[AnalysedPass, SensitivityDetails, AnalysisMetric | None]:
    """Quantize `baseline` once as the config's int8 pass `declared` (passes[`index`]) would,
    and rank every quantized node; with data.eval, the quantized model's metric too."""
    from compress.measure.evaluate import Judge
    from compress.quant.int8 import excluded_nodes, preprocess, quiet_root_logger
    from compress.quant.ranking import job_modules, shared_sensitivity

    prepared = preprocess(baseline, ctx.workdir / "analyze.pre.onnx", ctx)
    int8, origin = _int8_pass(declared, index, prepared, ctx)
    ctx.log(f"quantizing once as {origin} would ({int8.name})")
    excluded = excluded_nodes(prepared, int8.params.exclude, int8.key, baseline)
    quantized = ctx.workdir / "analyze.int8.onnx"
    with quiet_root_logger():
        plan = int8.settle(prepared, excluded, ctx)
        int8.quantize(plan, quantized, excluded)
    quantize_job = int8.job(baseline, plan, excluded)
    sensitivity = shared_sensitivity(quantize_job, quantized, ctx)
    metric = None
    if ctx.eval is not None:
        output = ctx.judged_output
        reference = ctx.shared(AnalysisCache).reference_outputs(
            baseline, ctx.eval, output, ctx.metric
        )
        judge = Judge(reference, ctx.eval, ctx.metric, output)
        value = judge.score(quantized)
        metric = AnalysisMetric(
            name=ctx.metric,
            float_value=judge.reference_value,
            quantized=value,
            drop=judge.drop(value),
        )
    quantized.unlink()
    analysed = AnalysedPass(type=int8.name, origin=origin, settings=_settings(int8))
    modules = job_modules(quantize_job)
    return analysed, sensitivity.details(limit=None, modules=modules), metric


def _int8_pass(
    declared: Pass[Any], index: int, prepared: Path, ctx: PassContext
) -> tuple[Int8Pass[Any, Any], str]:
    """The pass whose quantization is analysed, and where it comes from in the config."""
    from compress.passes.registry import get_pass
    from compress.quant.auto_candidates import candidates_for
    from compress.quant.int8 import Int8Pass

    where = f"passes[{index}]"
    if declared.name != "quantize.auto":
        if not isinstance(declared, Int8Pass):
            raise ConfigError(f"{where}: {declared.name} is not an int8 pass to analyse")
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
    params = pass_class.Params.model_validate(
        {**candidate.settings, "exclude": declared.params.exclude + candidate.float_nodes}
    )
    int8 = pass_class(params, where)
    if not isinstance(int8, Int8Pass):  # every candidate of quantize.auto is an int8 pass
        raise ConfigError(f"{where}: quantize.auto's {name} candidate is not an int8 pass")
    return int8, f"{where}, quantize.auto's {name} candidate"


def _settings(int8: Pass) -> dict[str, Any]:
    skip = {"max_accuracy_drop", "max_fallback_steps", "on_slower"}
    return int8.params.model_dump(mode="json", exclude=skip)
