"""Read a CSV file with a header row: feature columns become one float32 input [N, features],
a label column becomes integer labels (numbers as they are, names by their class order)."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress.config.limits import MAX_TABLE_BYTES
from compress.data import class_index
from compress.errors import DataError
from compress.files import open_text_bounded

if TYPE_CHECKING:
    from compress.config import DataSource


def read(source: DataSource, where: str, path: Path):
    header, rows = _rows(path, where, source.limit)
    missing = [c for c in [*(source.columns or []), source.labels] if c and c not in header]
    if missing:
        raise DataError(
            f"{where}: column {missing[0]!r} is not in {path.name} (it has: {', '.join(header)})"
        )
    columns = source.columns or [c for c in header if c != source.labels]
    if not columns:
        raise DataError(f"{where}: {path.name} has no feature column besides the labels")
    positions = [header.index(c) for c in columns]
    features = np.empty((len(rows), len(columns)), dtype=np.float32)
    for r, row in enumerate(rows):
        for c, position in enumerate(positions):
            features[r, c] = _number(row[position], where, path, r, columns[c])
    labels, classes = None, None
    if source.labels:
        names = [row[header.index(source.labels)].strip() for row in rows]
        labels, classes = labels_from_names(names, source.classes, where, path, source.labels)
    return {source.input_names[0]: features}, labels, classes


def _rows(path: Path, where: str, limit: int | None) -> tuple[list[str], list[list[str]]]:
    try:
        label = f"{where}.path"
        with open_text_bounded(
            path, MAX_TABLE_BYTES, label, DataError, "a .csv file", "utf-8-sig"
        ) as f:
            reader = csv.reader(f)
            header = [name.strip() for name in next(reader, [])]
            rows = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue  # blank lines
                if len(row) != len(header):
                    raise DataError(
                        f"{where}: {path.name} line {reader.line_num} has {len(row)} fields "
                        f"but the header has {len(header)}"
                    )
                rows.append(row)
                if limit and len(rows) == limit:
                    break
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{where}.path: {path} is not a readable CSV file ({e})") from None
    if not header or not rows:
        raise DataError(f"{where}: {path.name} needs a header row and at least one data row")
    return header, rows


def _number(cell: str, where: str, path: Path, row: int, column: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise DataError(
            f"{where}: {path.name} data row {row + 1}, column {column!r} holds {cell!r}, not a "
            "number; fix the file or leave the column out of `columns`"
        ) from None


def labels_from_names(
    names: list[str], classes: list[str] | None, where: str, path: Path, column: str
):
    """Integer labels as numbers; any other label as a class name."""
    numbers = [_is_int(n) for n in names]
    if classes is None and all(numbers):
        return np.array([int(n) for n in names], dtype=np.int64), None
    if classes is None and any(numbers):  # "3" beside "cat": a typo, not a class called "3"
        row = numbers.index(False)
        raise DataError(
            f"{where}: {path.name} data row {row + 1} has the label {names[row]!r} among "
            f"numeric labels in {column!r}; use class indexes throughout, or names with `classes`"
        )
    if "" in names:
        raise DataError(f"{where}: {path.name} has a row with an empty {column!r} label")
    return class_index(names, classes, where)


def _is_int(text: str) -> bool:
    """ASCII digits only (`str.isdigit` takes `²` too, which int() refuses), within int64."""
    return _INTEGER.fullmatch(text) is not None


_INTEGER = re.compile(r"[-+]?[0-9]{1,18}")
