"""What the torch steps (training, fine-tuning, dependency-graph pruning) read of a run:
`TorchContext`, a narrower view than the passes' (compress.passes.context.PassContext, which
every run context that satisfies it also satisfies this)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from compress.data import Dataset
    from compress.progress import ProgressDisplay


class TorchContext(Protocol):
    @property
    def datasets(self) -> dict[str, Dataset]:
        """By role: the train set, a validation set."""
        ...

    @property
    def log(self) -> Callable[[str], None]: ...

    @property
    def progress(self) -> ProgressDisplay:
        """How far a training run is."""
        ...

    def samples(self, count: int) -> list[np.ndarray]:
        """`count` samples of the model's inputs, in input order (to trace the model)."""
        ...
