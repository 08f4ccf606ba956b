"""`compress analyze`: which nodes int8 quantization hurts most, without compressing anything.

It loads the model and the config as `compress run` does (and refuses the same inputs), exports
the model as loaded, quantizes it once the way the config's int8 pass would and ranks every
quantized node by the error it adds (compress.quant.analysis), and writes OUT/sensitivity.json,
sensitivity.md and sensitivity.html. No quantized model is kept. The config's other passes do
not run: pruning or distillation first would change the model the ranking is about.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from compress.job.outdir import OutputFolder
from compress.job.preflight import Job, prepare
from compress.quant.analysis import Analysis, analyse_int8, analysed_pass

ANALYZE_FILES = ("sensitivity.json", "sensitivity.md", "sensitivity.html")


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
    from compress.job.pipeline import temp_space_errors
    from compress.models.run_files import run_inputs
    from compress.report.sensitivity import analysis_html, analysis_markdown

    outputs = OutputFolder(Path(out_dir), force, files=ANALYZE_FILES)
    outputs.check()
    try:
        job = prepare(
            Path(model_path), Path(config_path), trust_pickle, log, overrides=overrides,
            trust_remote_code=trust_remote_code,
        )  # fmt: skip
        try:
            outputs.refuse_overwriting(run_inputs(Path(model_path), job.config))
            index, int8 = analysed_pass(job.passes)
            outputs.clear_previous()
            with temp_space_errors():
                result = _analysis(job, index, int8)
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


def _analysis(job: Job, index: int, declared) -> Analysis:
    from compress.job.pipeline import baseline_onnx, seed_everything

    seed_everything(job.config.config.seed)
    baseline = baseline_onnx(job)
    analysed, sensitivity, metric = analyse_int8(baseline, declared, index, job.context)
    return Analysis(
        model_file=job.model.path.name,
        config_file=job.config.path.name,
        analysed=analysed,
        notes=_notes(job, index),
        sensitivity=sensitivity,
        metric=metric,
    )


def _notes(job: Job, index: int) -> list[str]:
    others = [p.name for i, p in enumerate(job.passes) if i != index]
    if not others:
        return []
    return [
        f"analysed the model as loaded; the config's other passes ({', '.join(others)}) "
        "were not run"
    ]
