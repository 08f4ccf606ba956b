"""Everything a run checks before any work: the config, the passes and their order, the model
and the data against each other, and the module torch passes will change. Bad input is refused
here, as an InputError, so that nothing is exported or written."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compress.config import LoadedConfig
from compress.config.overrides import Override
from compress.data import Dataset
from compress.data.checks import check_labels_fit
from compress.errors import ConfigError, DataError, ModelLoadError, first_line
from compress.job.context import (
    Context,
    check_batch_bytes,
    input_names_for,
    load_datasets,
)
from compress.job.generation_check import check_generation
from compress.job.program_lm import check_program_lm
from compress.job.text_data import with_tokens
from compress.models import Format, LoadedModel, load_model
from compress.models.arch import check_arch
from compress.models.hf_provenance import ModelFolder
from compress.models.model_inputs import fixed_batch_sizes, graph_inputs
from compress.models.run_files import arch_specs
from compress.passes.base import Pass, TorchPass
from compress.passes.recipe import load_recipe
from compress.passes.registry import get_pass
from compress.progress import ProgressDisplay, silent
from compress.records import Record
from compress.torch.editable import editable_module
from compress.torch.export import named_torch_outputs
from compress.torch.outputs import judged_output
from compress.torch.runnable import runnable


class ModelFacts(Record):
    """What the checks before a run learned about the model, kept with the baseline in the stage
    cache: a later run whose torch stages are all cached goes on from them without loading the
    model (no torch import, no unpickling, no check run again on the same bytes)."""

    format: Format
    input_names: list[str]
    output_names: list[str]
    output_sizes: list[int]  # each output's values per sample: the classes labels index
    fixed_batches: list[int] = []  # an ONNX model's fixed batch sizes, if it has any
    folder: ModelFolder | None = None  # a model folder's files and task, for the report
    positions: int | None = None  # a decoder's longest sequence, where its config says

    def fit(self, baseline: Path) -> bool:
        """Whether they agree with the baseline's ONNX file they were kept with: its inputs and
        outputs by name (a check that the entry is whole; the cache authenticates it)."""
        import onnx

        proto = onnx.load(str(baseline), load_external_data=False)
        outputs = [o.name for o in proto.graph.output]
        # a decoder's graph also takes position ids and its cache, which the feeds fill in
        inputs = [i.name for i in graph_inputs(proto)][: len(self.input_names)]
        sized = len(self.output_sizes) == len(outputs)
        return inputs == self.input_names and outputs == self.output_names and sized


@dataclass
class Job:
    config: LoadedConfig
    model: LoadedModel
    passes: list[Pass]
    context: Context
    module: Any = None  # the torch module that torch passes change (None: no torch pass)
    prepared: dict[str, Any] = field(default_factory=dict)  # check_model's results, by pass key
    facts: ModelFacts | None = None  # None where a later run could not go on without the model

    @property
    def loaded(self) -> bool:
        """False for a job planned from the stage cache (job_from_facts): no model in memory."""
        return self.model.model is not None


Checked = tuple[LoadedConfig, list[Pass], dict[str, Dataset]]


def prepare(
    model_path: Path,
    config_path: Path,
    trust_pickle: bool,
    log: Callable[[str], None],
    progress: ProgressDisplay = silent,
    overrides: Sequence[str] = (),
    trust_remote_code: bool = False,
) -> Job:
    """Load and check everything a run needs; raises InputError before any work is done."""
    checked = with_tokens(check_config(config_path, overrides), model_path, trust_remote_code)
    return prepare_model(
        model_path, checked, trust_pickle, log, progress, trust_remote_code=trust_remote_code
    )


def prepare_model(
    model_path: Path,
    checked: Checked,
    trust_pickle: bool,
    log: Callable[[str], None],
    progress: ProgressDisplay = silent,
    workdir: Path | None = None,
    sha256: str | None = None,
    trust_remote_code: bool = False,
) -> Job:
    """Load the model and check it against the checked config and data (`workdir`: the job's
    work folder, when it has one already; `sha256`: the model file's, when it is known; text
    data already tokenized: compress.job.text_data). A model folder takes the data's arrays in
    the data's order, and runs its own code only with `trust_remote_code`."""
    config, passes, datasets = checked
    section = config.config.model
    made_up_inputs = not datasets and not config.config.model.inputs
    wanted = None  # the arrays a model folder is fed, in order; else its tokenizer's
    if Path(model_path).is_dir() and not made_up_inputs:
        wanted = input_names_for(config, datasets)
    model = load_model(
        model_path, section, config.base_dir, trust_pickle, sha256=sha256,
        trust_remote_code=trust_remote_code, inputs=wanted,
    )  # fmt: skip
    if made_up_inputs:
        inputs_from_model(model, config, log)
    check_generation(config.config.report.generation, model)
    fixed_batches = fixed_batch_sizes(model.model) if model.is_onnx else set()
    if model.is_onnx:
        check_no_torch_pass(passes, model.path.name)
        check_batches_fit(fixed_batches, config.config.report.batch_sizes)
    fixed = model.fixed_batch
    if fixed:
        fit_fixed_batch(model, config, passes, log)
    if model.is_onnx:
        names = [i.name for i in graph_inputs(model.model)]
    else:
        names = input_names_for(config, datasets)
    check_program_lm(model, passes, names, log)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="compress-"))
    context = Context(config, datasets, names, workdir, log, progress, model, trust_pickle)
    context.trust_remote_code = trust_remote_code
    context.positions = model.positions
    try:
        if model.is_onnx:
            check_onnx_data_fits(model.path, context)
        else:
            model_runs = runnable(model)
            check_data_fits(lambda s: named_torch_outputs(model_runs, s), context, "")
        module, prepared = editable_for_torch_passes(model, passes, context)
    except BaseException:  # Ctrl-C and SIGTERM too: the work folder is ours to remove
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    facts = None  # a fixed batch or made-up inputs change the config: the model is needed
    if not fixed and not made_up_inputs:
        facts = ModelFacts(
            format=model.format,
            input_names=names,
            output_names=context.output_names,
            output_sizes=context.output_sizes,
            fixed_batches=sorted(fixed_batches),
            folder=model.folder,
            positions=model.positions,
        )
    return Job(config, model, passes, context, module, prepared, facts)


def job_from_facts(
    model_path: Path,
    checked: Checked,
    facts: ModelFacts,
    sha256: str,
    trust_pickle: bool,
    workdir: Path,
    log: Callable[[str], None],
    progress: ProgressDisplay = silent,
    trust_remote_code: bool = False,
) -> Job:
    """A job whose torch stages all come from the stage cache: the model is not loaded, and
    what the checks learned of it when those stages were computed (same model bytes, same config
    and data: the cache key covers them) stands in. No code in the model file runs."""
    config, passes, datasets = checked
    model = LoadedModel(Path(model_path), facts.format, sha256, None, facts.folder)
    context = Context(
        config, datasets, facts.input_names, workdir, log, progress, None, trust_pickle
    )
    context.trust_remote_code = trust_remote_code
    context.positions = facts.positions  # the model is not loaded: what the checks learned
    context.output_names, context.output_sizes = facts.output_names, facts.output_sizes
    check_batches_fit(set(facts.fixed_batches), config.config.report.batch_sizes)
    judge_outputs(context)  # report.output and the labels, as check_data_fits checks them
    for role, dataset in datasets.items():
        if dataset.labels is not None:
            check_labels_fit(
                dataset.labels, facts.output_sizes[context.judged_output], f"data.{role}"
            )
    return Job(config, model, passes, context, facts=facts)


def inputs_from_model(model: LoadedModel, config: LoadedConfig, log: Callable[[str], None]):
    """Without data or model.inputs, the inputs an ONNX graph or a torch.export program declares
    become model.inputs (samples shaped like them stand in for data), and a model folder's token
    inputs (or images) at a default size; other formats record no shapes, and input_names_for
    says what to add."""
    from compress.models.model_inputs import onnx_input_specs, program_input_specs

    if model.is_onnx:
        specs = onnx_input_specs(model.model)
    elif model.format == "exported_program" and hasattr(model.model, "input_specs"):
        specs = model.model.input_specs()  # a decoder program's token inputs
    elif model.format == "exported_program":
        specs = program_input_specs(model.model)
    elif model.format == "hf_folder":
        specs = model.model.input_specs()
    else:
        return
    if specs is None:
        raise ConfigError(
            f"{model.path.name}: an input has a dtype or shape model.inputs cannot declare, so no "
            "samples can be made up; add data.eval (or data.calibration)"
        )
    config.config.model.inputs = specs
    shown = ", ".join(f"{s.name} {s.shape} {s.dtype}" for s in specs)
    log(f"no data: samples shaped like the model's inputs stand in ({shown})")


def editable_for_torch_passes(model: LoadedModel, passes: list[Pass], ctx: Context):
    """The module the torch passes start from (editable when the first one changes it), and
    what each pass's check against the module it will see prepared for it, by pass key; None
    and {} without torch passes."""
    torch_passes = [p for p in passes if isinstance(p, TorchPass)]
    if not torch_passes:
        return None, {}
    first = torch_passes[0]
    if first.changes_input_model:
        start = editable_module(model, f"{first.key} ({first.name})")
    else:
        start = runnable(model)
    module, prepared = start, {}
    for p in torch_passes:
        prepared[p.key] = p.check_model(module, ctx)
        module = p.model_after(module, prepared[p.key])
    return start, prepared


def check_config(
    config_path: Path, overrides: Sequence[str | Override] = (), archs: bool = True
) -> tuple[LoadedConfig, list[Pass], dict[str, Dataset]]:
    """Every check that needs only the config and its data files: what `compress validate` does
    and what `compress run` does first (`archs`: that the architectures it names are there).
    Returns the config, its passes and its datasets."""
    return check_loaded_config(load_recipe(config_path, overrides), archs)


def check_loaded_config(
    config: LoadedConfig, archs: bool = True, datasets: dict[str, Dataset] | None = None
) -> Checked:
    """check_config's checks on a config already loaded; `datasets`: its data, when the caller
    loaded the same data sections already (a sweep's variants)."""
    for key, spec in arch_specs(config).items() if archs else ():
        check_arch(spec, config.base_dir, key)
    passes = build_passes(config)
    check_metric(config)
    datasets = load_datasets(config) if datasets is None else datasets
    check_batch_bytes(config, datasets)
    return config, passes, datasets


def build_passes(config: LoadedConfig) -> list[Pass]:
    """The configured passes, each checked against the config."""
    passes = [
        get_pass(spec.type)(spec.params, f"passes[{index}]")
        for index, spec in enumerate(config.passes)
    ]
    for p in passes:
        p.check(config)
    check_order(passes)
    return passes


def check_no_torch_pass(passes: list[Pass], onnx_input: str) -> None:
    for index, p in enumerate(passes):
        if p.stage == "torch":
            raise ConfigError(
                f"passes[{index}].type: {p.name} works on a torch model, but {onnx_input} is "
                "ONNX; remove the pass or start from the torch model"
            )


def check_order(passes: list[Pass]) -> None:
    seen_onnx = False
    for index, p in enumerate(passes):
        if p.stage == "torch" and seen_onnx:
            raise ConfigError(
                f"passes[{index}]: {p.name} works on the torch model and must come "
                "before every ONNX pass"
            )
        seen_onnx = seen_onnx or p.stage == "onnx"


def check_metric(config: LoadedConfig) -> None:
    cfg = config.config
    if cfg.gates.max_accuracy_drop is not None and cfg.data.eval is None:
        raise ConfigError("gates.max_accuracy_drop needs data.eval to measure accuracy")
    if cfg.data.eval is not None and cfg.report.metric == "top1" and not cfg.data.eval.has_labels:
        raise ConfigError(
            "report.metric: top1 needs data.eval.labels; add labels or use metric: agreement"
        )


def check_batches_fit(fixed: set[int], batch_sizes: list[int]) -> None:
    """An ONNX input with a fixed batch size (`fixed`) can only be measured at that size."""
    if fixed and any(b not in fixed for b in batch_sizes):
        raise ConfigError(
            f"report.batch_sizes: the ONNX model's batch size is fixed at {fixed.pop()}; set "
            "report.batch_sizes to it or export the model with a dynamic batch axis"
        )


def fit_fixed_batch(
    model: LoadedModel, config: LoadedConfig, passes: list[Pass], log: Callable[[str], None]
) -> None:
    """A program saved with a fixed batch runs at that batch everywhere (data in chunks, the last
    one padded), so latency is measured at that batch alone; torch passes, which change the
    model and run it on batches of their own, are refused."""
    fixed, name = model.fixed_batch, model.path.name
    if fixed is None:  # a dynamic batch: nothing to fit
        return
    saved = f"{name} was saved by torch.export with a fixed batch of {fixed}"
    again = "export it again with dynamic_shapes on the batch dimension (an example batch of 2+)"
    for index, p in enumerate(passes):
        if p.stage == "torch":
            raise ConfigError(
                f"passes[{index}] ({p.name}) trains or traces the model on batches of its own, "
                f"but {saved}; {again}, or use ONNX passes only"
            )
    report = config.config.report
    if "batch_sizes" in report.model_fields_set and report.batch_sizes != [fixed]:
        raise ConfigError(
            f"report.batch_sizes: {saved} and runs only at that batch; set "
            f"report.batch_sizes: [{fixed}], or {again}"
        )
    report.batch_sizes = [fixed]
    log(
        f"{saved}: data runs through it in chunks of {fixed} (the last one padded with copies "
        f"of its last sample, whose outputs are dropped); latency is measured at batch {fixed}"
    )


def check_onnx_data_fits(path: Path, ctx: Context) -> None:
    """check_data_fits for an ONNX file; the message lists the inputs the graph declares."""
    from compress.measure.runtime import open_session, run_batched

    try:
        session = open_session(path, threads=1, lean=True)  # beside the loaded ModelProto
    except Exception as e:  # the checker passed, but the graph contradicts itself (types, shapes)
        raise ModelLoadError(
            f"{path.name}: ONNX Runtime cannot load the model ({first_line(e, 200)}); export it "
            "again or fix the graph"
        ) from None
    declared = ", ".join(f"{i.name} {i.shape}" for i in session.get_inputs())
    names = [o.name for o in session.get_outputs()]

    def forward(samples: list[np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, run_batched(session, samples, 2), strict=True))

    check_data_fits(forward, ctx, f" (inputs: {declared})")


def check_data_fits(forward: Callable, ctx: Context, model_inputs: str) -> None:
    """Run two samples of every dataset through the model (`forward` gives its outputs by
    name), so that data of the wrong shape, labels the model's outputs cannot mean, or a
    `report.output` it does not have, are refused as bad input before anything is exported or
    quantized. Sets the context's output names and judged output."""
    sources: list[tuple[str, Collection[str], list[np.ndarray], np.ndarray | None]] = [
        (f"data.{role}", d.inputs, d.take(2), d.labels) for role, d in ctx.datasets.items()
    ]
    if not sources:  # samples shaped like model.inputs stand in for data
        specs = ctx.config.config.model.inputs or []
        sources = [("model.inputs", [s.name for s in specs], ctx.samples(2), None)]
    for key, names, samples, labels in sources:
        try:
            outputs = forward(samples)
        except Exception as e:
            shapes = ", ".join(
                f"{name} {list(a.shape[1:])} {a.dtype}"
                for name, a in zip(names, samples, strict=True)
            )
            raise DataError(
                f"{key} does not fit the model{model_inputs}: samples of {shapes} failed "
                f"({first_line(e, 200)}); check {key} and the arrays' shapes"
            ) from None
        ctx.output_names = list(outputs)
        ctx.output_sizes = [int(np.prod(a.shape[1:], dtype=np.int64)) for a in outputs.values()]
        judge_outputs(ctx)
        _check_outputs(list(outputs.values()), ctx.judged_output, labels, key)


def judge_outputs(ctx: Context) -> None:
    """The output the metric judges, by report.output among the model's outputs (ConfigError
    for one it does not have)."""
    ctx.judged_output = judged_output(ctx.output_names, ctx.config.config.report.output)


def _check_outputs(
    outputs: list[np.ndarray], judged: int, labels: np.ndarray | None, key: str
) -> None:
    """Finite outputs, and labels within the judged output's classes (what top-1 reads)."""
    for index, output in enumerate(outputs):
        if output.dtype.kind == "f" and not np.isfinite(output).all():
            raise DataError(
                f"{key}: the model's output {index} holds NaN or infinity on the first "
                "samples; check the model and that the data is scaled as it expects"
            )
    if labels is not None and outputs:
        check_labels_fit(labels, int(np.prod(outputs[judged].shape[1:], dtype=np.int64)), key)
