"""What every dataset must hold, whatever file it came from: numeric, finite inputs and labels
that are class indexes. Checked when data is loaded, so that bad values are refused by name
(file, key, first sample) instead of surfacing as a failed export or a silent top-1 of 0.0."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.errors import DataError


def checked_inputs(inputs: dict[str, np.ndarray], where: str, path: Path) -> None:
    """Inputs must be numbers (or booleans) with no NaN or infinity."""
    for name, array in inputs.items():
        kind = array.dtype.kind
        if kind not in "fiub":
            raise DataError(
                f"{where}: {name!r} in {path.name} holds {array.dtype} values, not numbers; "
                "save numeric arrays"
            )
        if array.ndim == 0:
            raise DataError(f"{where}: {name!r} in {path.name} is a single value, not samples")
        if kind == "f":
            _check_finite(array, f"{where}: {name!r} in {path.name}")


def checked_labels(labels: np.ndarray, where: str, path: Path, key: str) -> np.ndarray:
    """Labels as int64 class indexes [N]: one integer >= 0 per sample ([N, 1] is accepted)."""
    what = f"{where}.labels: {key!r} in {path.name}"
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(
            f"{what} has shape {list(labels.shape)}; labels are one class index per sample, "
            "shape [samples] (one-hot labels: save their argmax)"
        )
    if labels.dtype.kind == "f":
        _check_finite(labels, what)
        fractional = np.flatnonzero(labels != np.round(labels))
        if len(fractional):
            raise DataError(
                f"{what} holds {labels[fractional[0]]} at sample {fractional[0]}; labels are "
                "whole class indexes"
            )
    elif labels.dtype.kind not in "iub":
        raise DataError(
            f"{what} holds {labels.dtype} values; labels are integer class indexes "
            "(for class names use a CSV or image folders with `classes`)"
        )
    out_of_range = np.flatnonzero((labels < 0) | (labels >= 2**53))
    if len(out_of_range):
        first = int(out_of_range[0])
        raise DataError(
            f"{what} holds {labels[first]} at sample {first}; labels are class indexes >= 0"
        )
    return labels.astype(np.int64)


def check_labels_fit(labels: np.ndarray, classes: int, where: str) -> None:
    """Every label must index one of the model's `classes` outputs: a label past them would be
    counted wrong forever (top-1 of 0.0 with no error) and breaks the training loss."""
    if len(labels) == 0:
        return
    beyond = np.flatnonzero(labels >= classes)
    if len(beyond):
        first = int(beyond[0])
        raise DataError(
            f"{where}.labels: sample {first} has label {labels[first]}, but the model has "
            f"{classes} outputs (labels 0 to {classes - 1}); fix the labels or check that "
            "they belong to this model"
        )


def _check_finite(array: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        index = [int(i) for i in np.unravel_index(int(np.flatnonzero(bad)[0]), array.shape)]
        value = array[tuple(index)]
        raise DataError(
            f"{what} holds {value} at sample {index[0]}"
            + (f", index {list(index[1:])}" if len(index) > 1 else "")
            + "; remove or replace NaN and infinite values"
        )
