"""What a pass may read of the run: `PassContext`, the typed view of the run's context that every
pass is handed (compress.job.context.Context is the one implementation).

A pass reads its params, the model it is given and this view: the datasets by role, the model's
inputs and outputs, the config settings it declares in `Pass.reads` (the judged metric, the
accuracy budget, the gates, the timing settings) and a folder to work in. It never reads the whole
config. What several passes of one run share (the float model's reference outputs, a sensitivity
ranking) is a `shared(kind)` object, one per run and kind, so the context names no pass family.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from compress.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from compress.config import GatesSection, ReportSection
    from compress.data import Dataset
    from compress.models import LoadedModel
    from compress.progress import ProgressDisplay

Shared = TypeVar("Shared")


class PassContext(Protocol):
    # Read-only: a pass reads the run, it never changes it.
    @property
    def datasets(self) -> dict[str, Dataset]:
        """By role: calibration, eval, train, validation."""
        ...

    @property
    def input_names(self) -> list[str]: ...

    @property
    def output_names(self) -> list[str]:
        """The model's, in order."""
        ...

    @property
    def judged_output(self) -> int:
        """The index of the output the metric judges (report.output)."""
        ...

    @property
    def output_sizes(self) -> list[int]:
        """Each output's values per sample."""
        ...

    @property
    def workdir(self) -> Path:
        """The pass's own scratch folder lives under it."""
        ...

    @property
    def log(self) -> Callable[[str], None]: ...

    @property
    def progress(self) -> ProgressDisplay:
        """How long steps (training) show how far they are."""
        ...

    @property
    def loaded_model(self) -> LoadedModel | None:
        """The model as loaded, before any pass."""
        ...

    @property
    def positions(self) -> int | None:
        """A decoder's longest sequence, where its config says (report.generation's defaults
        are fitted to it); None for any other model, or one that does not say."""
        ...

    @property
    def trust_pickle(self) -> bool:
        """Other model files a pass loads (a teacher) may be pickles."""
        ...

    @property
    def trust_remote_code(self) -> bool:
        """... or model folders that bring code (auto_map)."""
        ...

    @property
    def metric(self) -> str:
        """report.metric: what the judged output is scored by."""
        ...

    @property
    def budget(self) -> float | None:
        """gates.max_accuracy_drop: the accuracy budget a pass may hold itself to."""
        ...

    @property
    def gates(self) -> GatesSection: ...

    @property
    def timing(self) -> ReportSection:
        """The report's settings, which passes time models by (batch sizes, threads, runs)."""
        ...

    @property
    def base_dir(self) -> Path:
        """The config's folder, which the paths a pass is given (a teacher) are relative to."""
        ...

    @property
    def calibration(self) -> Dataset | None: ...

    @property
    def validation(self) -> Dataset | None:
        """What training picks its best epoch on: data.validation, else data.eval."""
        ...

    @property
    def eval(self) -> Dataset | None: ...

    @property
    def sample_source(self) -> str:
        """Where `samples` come from: `data.<role>` or `model.inputs`."""
        ...

    def samples(self, count: int) -> list[np.ndarray]:
        """`count` samples of the model's inputs, in input order."""
        ...

    def derived(self, recipe: str, source: Path, target: Path, make: Callable[[], Path]) -> Path:
        """What `make()` writes to `target` from `source` by `recipe`; from the stage cache
        where an earlier run made it from the same bytes."""
        ...

    def shared(self, kind: type[Shared]) -> Shared:
        """The run's one `kind()` (made on first use): what the passes of a run share."""
        ...


def required(dataset: Dataset | None, role: str) -> Dataset:
    """A dataset a pass cannot work without (its `check` asked the config for it), or a
    ConfigError naming the missing `data.<role>`."""
    if dataset is None:
        raise ConfigError(f"data.{role}: this pass needs it; add it to the config")
    return dataset
