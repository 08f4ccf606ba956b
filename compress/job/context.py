"""What a run shares between its steps: the config, the datasets, the model's inputs, a workdir
(passes see it through compress.passes.context.PassContext)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from compress.config import GatesSection, LoadedConfig, ReportSection
from compress.config.limits import MAX_BATCH_BYTES
from compress.data import Dataset, check_same_classes, load_dataset
from compress.errors import ConfigError, DataError
from compress.progress import ProgressDisplay, silent

if TYPE_CHECKING:
    from compress.cache.store import StageCache
    from compress.config import InputSpec
    from compress.models import LoadedModel

DTYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
    "bool": np.bool_,
}

# Real samples for export, parity and latency come from the first of these the config has.
SAMPLE_ROLES = ("eval", "calibration", "train")
DATA_ROLES = ("calibration", "eval", "train", "validation")

Shared = TypeVar("Shared")


@dataclass
class Context:
    config: LoadedConfig
    datasets: dict[str, Dataset]  # by role: calibration, eval, train
    input_names: list[str]
    workdir: Path
    log: Callable[[str], None] = field(default=lambda message: None)
    progress: ProgressDisplay = silent  # how long steps (training) show how far they are
    loaded_model: LoadedModel | None = None  # the model as loaded, before any pass
    trust_pickle: bool = False  # other model files a pass loads (a teacher) may be pickles
    trust_remote_code: bool = False  # ... or model folders that bring code (auto_map)
    output_names: list[str] = field(default_factory=list)  # the model's, in order
    judged_output: int = 0  # the index of the output the metric judges (report.output)
    output_sizes: list[int] = field(default_factory=list)  # each output's values per sample
    positions: int | None = None  # a decoder's longest sequence, where its config says
    cache: StageCache | None = None  # the stage cache, where passes keep what they derive
    _shared: dict[type, Any] = field(default_factory=dict)  # shared(): one object per kind

    # The typed view passes read is compress.passes.context.PassContext; this is its one
    # implementation, and what the job steps share besides.
    def shared(self, kind: type[Shared]) -> Shared:
        """The run's one `kind()` (made on first use): what the passes of a run share (the
        int8 passes' AnalysisCache)."""
        if kind not in self._shared:
            self._shared[kind] = kind()
        return self._shared[kind]

    # What a pass reads of the config besides its params (it declares them in Pass.reads):
    @property
    def metric(self) -> str:
        """report.metric: what the judged output is scored by."""
        return self.config.config.report.metric

    @property
    def budget(self) -> float | None:
        """gates.max_accuracy_drop: the accuracy budget a pass may hold itself to."""
        return self.config.config.gates.max_accuracy_drop

    @property
    def gates(self) -> GatesSection:
        return self.config.config.gates

    @property
    def timing(self) -> ReportSection:
        """The report's settings, which passes time models by (batch sizes, threads, runs)."""
        return self.config.config.report

    @property
    def base_dir(self) -> Path:
        """The config's folder, which the paths a pass is given (a teacher) are relative to."""
        return self.config.base_dir

    def derived(self, recipe: str, source: Path, target: Path, make: Callable[[], Path]) -> Path:
        """What `make()` writes to `target` from `source` by `recipe`; from the stage cache
        where an earlier run made it from the same bytes (compress.cache.derived)."""
        from compress.cache.derived import derived_file

        return derived_file(self.cache, recipe, source, target, make)

    @property
    def calibration(self) -> Dataset | None:
        return self.datasets.get("calibration")

    @property
    def validation(self) -> Dataset | None:
        """What training picks its best epoch on: data.validation, else data.eval."""
        return self.datasets.get("validation") or self.datasets.get("eval")

    @property
    def eval(self) -> Dataset | None:
        return self.datasets.get("eval")

    @property
    def sample_source(self) -> str:
        """Where `samples` come from: the first dataset in SAMPLE_ROLES, else model.inputs."""
        role = next((r for r in SAMPLE_ROLES if r in self.datasets), None)
        return f"data.{role}" if role else "model.inputs"

    def samples(self, count: int) -> list[np.ndarray]:
        """`count` samples from `sample_source`, in input order."""
        for role in SAMPLE_ROLES:
            if role in self.datasets:
                return self.datasets[role].take(count)
        return synthetic_inputs(self.config, count)


def load_datasets(config: LoadedConfig) -> dict[str, Dataset]:
    """Load every data source in the config, cast to the declared input dtypes (text is read
    here and fitted once it is tokenized: compress.job.text_data)."""
    section = config.config.data
    datasets = {}
    for role in DATA_ROLES:
        source = getattr(section, role)
        if source is None:
            continue
        dataset = load_dataset(source, f"data.{role}", config.base_dir)
        if not dataset.untokenized:
            fit_input_specs(dataset, config, role)
        datasets[role] = dataset
    check_same_classes(datasets)
    return datasets


def fit_input_specs(dataset: Dataset, config: LoadedConfig, role: str) -> None:
    """A dataset's arrays against model.inputs, when it declares them: as many, fixed dims
    matching, cast to the declared dtypes."""
    specs = config.config.model.inputs
    if not specs:
        return
    if len(specs) != len(dataset.inputs):
        raise ConfigError(
            f"data.{role}.inputs lists {len(dataset.inputs)} arrays but "
            f"model.inputs declares {len(specs)}"
        )
    for key, spec in zip(list(dataset.inputs), specs, strict=True):
        _check_shape(dataset.inputs[key], spec, f"data.{role}", key)
        dataset.inputs[key] = dataset.inputs[key].astype(DTYPES[spec.dtype], copy=False)


def check_batch_bytes(config: LoadedConfig, datasets: dict[str, Dataset]) -> None:
    """The largest latency batch is built in memory (and run by every stage): refuse one that
    could not fit before anything is loaded or exported (text not tokenized yet is checked once
    it is)."""
    largest = max(config.config.report.batch_sizes)
    role = next((r for r in SAMPLE_ROLES if r in datasets), None)
    if role and datasets[role].untokenized:
        return
    if role:
        per_sample = sum(a[:1].nbytes for a in datasets[role].inputs.values())
    else:
        per_sample = sum(spec.sample_bytes for spec in config.config.model.inputs or [])
    total = largest * per_sample
    if total > MAX_BATCH_BYTES:
        raise ConfigError(
            f"report.batch_sizes: a batch of {largest} is {total / 1e9:.1f} GB of inputs, over "
            f"the limit of {MAX_BATCH_BYTES / 1e9:.1f} GB; measure smaller batches"
        )


def _check_shape(array: np.ndarray, spec, where: str, key: str) -> None:
    """Fixed dims of model.inputs[].shape must match the data (named dims match anything)."""
    sample = [len(array), *array.shape[1:]]
    fits = len(sample) == len(spec.shape) and all(
        not isinstance(want, int) or want == got
        for want, got in zip(spec.shape[1:], sample[1:], strict=True)
    )
    if not fits:
        declared = "[" + ", ".join(str(d) for d in spec.shape) + "]"
        raise DataError(
            f"{where}: {key!r} has shape {sample}, but model.inputs declares {spec.name} as "
            f"{declared}; fix the data or the declared shape"
        )


def input_names_for(config: LoadedConfig, datasets: dict[str, Dataset]) -> list[str]:
    """Model input names: model.inputs, else the arrays of the first data source (npz keys, a
    tokenizer's arrays)."""
    cfg = config.config
    if cfg.model.inputs:
        return [spec.name for spec in cfg.model.inputs]
    for role in SAMPLE_ROLES:
        if role in datasets:
            return list(datasets[role].inputs)
    raise ConfigError(
        "the model's inputs are unknown: add data.eval (or data.calibration) or "
        "model.inputs: [{name, shape, dtype}]"
    )


def synthetic_inputs(config: LoadedConfig, count: int) -> list[np.ndarray]:
    """Zeros/ones shaped like model.inputs, for a config that declares inputs but has no data."""
    return spec_samples(config.config.model.inputs or [], count)


def spec_samples(specs: list[InputSpec], count: int) -> list[np.ndarray]:
    """`count` samples of ones shaped like the `model.inputs` entries `specs` (named dims as 1)."""
    arrays: list[np.ndarray] = []
    for spec in specs:
        shape = [count] + [d if isinstance(d, int) else 1 for d in spec.shape[1:]]
        arrays.append(np.ones(shape, dtype=DTYPES[spec.dtype]))
    return arrays
