"""Datasets: named input arrays (in the model's order) and optional labels, read from an .npz
file, a CSV file, a folder of images (one subfolder per class), or text (compress.data.text:
read with the config, tokenized with the model's tokenizer once it is known)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress.errors import DataError
from compress.files import path_problem

if TYPE_CHECKING:
    from compress.config import Augment, DataSource
    from compress.data.text import TextExamples, TextTokenizer


@dataclass
class Dataset:
    """Arrays loaded from one data source; re-iterable in batches."""

    where: str  # the config key, e.g. "data.eval"
    path: Path
    inputs: dict[str, np.ndarray]  # in the model's input order
    labels: np.ndarray | None
    classes: list[str] | None = None  # label names, when labels came from names (csv, folders)
    augment: Augment | None = None  # data.train only: applied by training, batch by batch
    text: TextExamples | None = None  # text data: its examples, tokenized into `inputs` later
    tokenizer: TextTokenizer | None = None  # text data, tokenized: by what, and how

    @property
    def untokenized(self) -> bool:
        """Text whose tokenizer is not known yet (its `inputs` are still empty)."""
        return self.text is not None and not self.inputs

    def __len__(self) -> int:
        if self.text is not None and not self.inputs:  # untokenized
            return len(self.text.texts)
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
    from compress.data import csv_table, images, npz
    from compress.data.checks import checked_inputs, checked_labels

    path = (base_dir / source.path).resolve()
    kind = source.kind
    problem = data_path_problem(path, kind)
    if problem:
        raise DataError(f"{where}.path: {path}: {problem} (paths are relative to the config file)")
    if kind == "text":
        return _text_dataset(source, where, path)
    reader = {"npz": npz.read, "csv": csv_table.read, "images": images.read}[kind]
    inputs, labels, classes = reader(source, where, path)
    checked_inputs(inputs, where, path)
    if labels is not None:
        labels = checked_labels(labels, where, path, source.labels or "class folders")
    if source.augment is not None:
        check_augmentable(inputs, where)
    return Dataset(where, path, inputs, labels, classes, source.augment)


EXPECTED = {
    "npz": "an .npz file",
    "csv": "a .csv file",
    "images": "a folder of class subfolders",
    "text": "a text file (.txt, .jsonl, .csv)",
}


def data_path_problem(path: Path, kind: str) -> str | None:
    """Why `path` cannot be read as data of `kind`, naming the kind expected; None if it can."""
    if kind != "images":
        return path_problem(path, EXPECTED[kind])
    if path.is_dir():
        return None
    problem = path_problem(path, EXPECTED[kind])
    if problem is None:  # a regular file
        return (
            "is a file, not a folder of class subfolders (images); for a data file give "
            "format: npz or csv"
        )
    return problem


def _text_dataset(source: DataSource, where: str, path: Path) -> Dataset:
    """The examples of a text file, and its labels; tokenized later (see the module docstring)."""
    from compress.data import text
    from compress.data.checks import checked_labels
    from compress.data.csv_table import labels_from_names

    if source.augment is not None:
        raise DataError(f"{where}.augment: flips and crops are for images, not text; remove it")
    examples, names = text.read(source, where, path)
    labels, classes = None, None
    if names is not None:
        field = source.labels or "labels"
        labels, classes = labels_from_names(names, source.classes, where, path, field)
        labels = checked_labels(labels, where, path, field)
    return Dataset(where, path, {}, labels, classes, text=examples)


def check_augmentable(inputs: dict[str, np.ndarray], where: str) -> None:
    """Flips and crops move pixels: they need float image batches [N, C, H, W]."""
    for name, array in inputs.items():
        if array.ndim != 4 or not np.issubdtype(array.dtype, np.floating):
            raise DataError(
                f"{where}.augment: flips and crops need float images [N, C, H, W], but "
                f"{name!r} is {array.dtype} {list(array.shape)}; remove augment"
            )


def class_index(names: list[str], classes: list[str] | None, where: str) -> tuple:
    """Label numbers for class `names`: their place in `classes`, else in the sorted names."""
    order = classes or sorted(set(names))
    index = {name: i for i, name in enumerate(order)}
    unknown = sorted(set(names) - index.keys())
    if unknown:
        raise DataError(
            f"{where}.classes: {unknown[0]!r} is a class in the data but not in classes "
            f"({', '.join(order)}); add it"
        )
    return np.array([index[n] for n in names], dtype=np.int64), order


def check_same_classes(datasets: dict[str, Dataset]) -> None:
    """Labels taken from names must mean the same class in every dataset."""
    named = [(role, d.classes) for role, d in datasets.items() if d.classes is not None]
    for role, classes in named[1:]:
        first_role, first = named[0]
        if classes != first:
            raise DataError(
                f"data.{role} has the classes {classes}, but data.{first_role} has {first}: "
                "their label numbers would differ; list the same `classes` in both"
            )
