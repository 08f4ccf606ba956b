"""Datasets from .npz files: named input arrays (in the model's order) and optional labels."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.config import DataSource
from compress.errors import DataError


@dataclass
class Dataset:
    """Arrays loaded from one data source; re-iterable in batches."""

    where: str  # the config key, e.g. "data.eval"
    path: Path
    inputs: dict[str, np.ndarray]  # in the model's input order
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def batches(self, batch_size: int) -> Iterator[list[np.ndarray]]:
        for start in range(0, len(self), batch_size):
            yield [a[start : start + batch_size] for a in self.inputs.values()]

    def take(self, count: int) -> list[np.ndarray]:
        """The first `count` samples, repeated if the set is smaller (for latency batches)."""
        return repeat_to(list(self.inputs.values()), count)


def repeat_to(arrays: list[np.ndarray], count: int) -> list[np.ndarray]:
    """Exactly `count` rows of each array: its first rows, cycled when it has fewer."""
    reps = -(-count // len(arrays[0]))
    return [np.concatenate([a] * reps)[:count] if reps > 1 else a[:count] for a in arrays]


def load_dataset(source: DataSource, where: str, base_dir: Path) -> Dataset:
    """Load and check one data source; DataError names the key, the file and the fix."""
    path = (base_dir / source.path).resolve()
    if not path.is_file():
        raise DataError(
            f"{where}.path: data file not found: {path} (paths are relative to the config file)"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DataError(
                f"{where}.path: {path} holds pickled objects, which are refused; "
                "save plain numeric arrays with numpy.savez"
            ) from None
        raise DataError(f"{where}.path: {path} is not a readable .npz file: {e}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{where}.path: {path} is not a readable .npz file ({e})") from None
    keys = [*source.inputs, *([source.labels] if source.labels else [])]
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise DataError(
            f"{where}: key {missing[0]!r} is not in {path.name} (it has: "
            f"{', '.join(sorted(arrays)) or 'nothing'})"
        )
    lengths = {k: len(arrays[k]) if arrays[k].ndim else 0 for k in keys}
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise DataError(
            f"{where}: arrays in {path.name} must share a non-empty first (sample) "
            f"dimension; got {lengths}"
        )
    limit = source.limit or len(arrays[keys[0]])
    inputs = {k: arrays[k][:limit] for k in source.inputs}
    labels = arrays[source.labels][:limit] if source.labels else None
    return Dataset(where, path, inputs, labels)
