"""The ranking of a quantized model's nodes by the error each adds (compress.quant.sensitivity),
shared through the run's Context so that quantize.auto's candidates and later passes on the same
file reuse it, and measured only when something asks for it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from compress.errors import first_line
from compress.quant.sensitivity.cache import AnalysisCache

if TYPE_CHECKING:
    from compress.passes.context import PassContext
    from compress.quant.fallback import QuantizeJob
    from compress.quant.sensitivity import RankingFailed, Sensitivity, SensitivityDetails

RANKING_SAMPLES = 32  # what the node ranking runs (its cost grows with them; see sensitivity)


def shared_sensitivity(job: QuantizeJob, quantized: Path, ctx: PassContext) -> Sensitivity:
    """The ranking of the nodes `quantized` (made by `job`) changed: from ctx.analysis when an
    earlier quantization of the same source under the same scheme scored them all, else
    measured now and remembered there."""
    import onnx

    from compress.quant.module_names import shown
    from compress.quant.sensitivity import measure_sensitivity, restricted_to
    from compress.quant.sensitivity.nodes import changed_nodes

    changed = changed_nodes(
        onnx.load(str(job.prepared), load_external_data=False).graph,
        onnx.load(str(quantized), load_external_data=False).graph,
    ) - set(job.excluded)
    cached = ctx.shared(AnalysisCache).sensitivity(job.source, job.scheme, changed)
    if cached is not None:
        ctx.log("  sensitivity: reusing the ranking measured for this model and scheme")
        return restricted_to(cached, changed)
    from compress.measure.evaluate import fitting_samples
    from compress.quant.fallback import sensitivity_samples

    samples = [a[:RANKING_SAMPLES] for a in sensitivity_samples(ctx)]
    samples = fitting_samples(job.prepared, samples, ctx.judged_output)
    sensitivity = measure_sensitivity(
        job.prepared, quantized, samples, ctx.workdir, set(job.excluded)
    )
    ctx.shared(AnalysisCache).remember(job.source, job.scheme, sensitivity)
    modules = job_modules(job)
    worst = ", ".join(f"{shown(n.node, modules)} ({n.score:.1%})" for n in sensitivity.ranked()[:3])
    ctx.log(
        f"  sensitivity: {sensitivity.scored} node(s) scored on {sensitivity.samples} samples in "
        f"{sensitivity.seconds:.1f} s"
        + (f"; worst ({sensitivity.ranked_by}): {worst}" if worst else "")
    )
    return sensitivity


def job_modules(job: QuantizeJob) -> dict[str, str]:
    """Node -> torch module for the nodes of the job's graph, as its source recorded them (none
    for a file that is not there: a job that writes its graphs elsewhere)."""
    from compress.quant.module_names import module_names

    paths = [p for p in (job.prepared, job.source) if Path(p).is_file()]
    return {node: module for path in paths for node, module in module_names(path).items()}


class Ranking:
    """The node ranking of one quantized model, measured when first asked for (the report asks
    unless `sensitivity: false`; the search asks when the first round misses the budget)."""

    def __init__(self, job: QuantizeJob, quantized: Path, ctx: PassContext):
        self.job, self.quantized, self.ctx = job, quantized, ctx
        self.measured = False
        self.problem: str | None = None
        self._sensitivity: Sensitivity | None = None

    def get(self) -> Sensitivity | None:
        if not self.measured:
            self.measured = True
            try:
                self._sensitivity = shared_sensitivity(self.job, self.quantized, self.ctx)
            except Exception as e:  # the ranking helps; a graph it cannot read must not fail
                self.problem = first_line(e, 160)
                self.ctx.log(f"  sensitivity: could not rank the nodes: {self.problem}")
        return self._sensitivity

    def details(self) -> SensitivityDetails | RankingFailed:
        from compress.quant.sensitivity import RankingFailed

        sensitivity = self.get()
        if sensitivity is None:
            return RankingFailed(error=self.problem)
        return sensitivity.details(modules=job_modules(self.job))
