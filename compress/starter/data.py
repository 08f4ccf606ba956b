"""`compress init --data PATH`: the data sections a starter gets from the user's samples.

PATH is described the way a config's data source is (an .npz, a .csv or a folder of images, told
apart as `data:` tells them); the starter then uses it for calibration and evaluation, and
`compress init` runs the config's own checks on it, so data that does not fit the model is
refused before anything is written.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.errors import DataError

LABEL_NAMES = ("y", "label", "labels", "target", "targets", "class")
CALIBRATION_LIMIT = 256


@dataclass(frozen=True)
class StarterData:
    """One data source for both data.calibration and data.eval."""

    source: dict[str, Any]  # the YAML mapping: path (relative to the config), inputs, ...
    labelled: bool


def starter_data(path: Path, config_dir: Path, input_names: list[str], inputs) -> StarterData:
    """Describe `path` for a config written in `config_dir`; `inputs` are the model's input
    specs (dicts with name / shape) when the model records them."""
    from compress.config import DataSource
    from compress.data import data_path_problem

    kind = "images" if path.is_dir() else DataSource.model_construct(path=path, format=None).kind
    kind = "npz" if kind == "images" and not path.is_dir() else kind  # a file: read as one
    problem = data_path_problem(path, kind)
    if problem:
        raise DataError(
            f"--data {path}: {problem}; give an .npz file, a .csv file or a folder of images"
        )
    readers = {"npz": _npz_source, "csv": _csv_source, "images": _image_source}
    source = readers[kind](path, input_names, inputs)
    labelled = kind == "images" or "labels" in source
    return StarterData({"path": relative_to(path, config_dir), **source}, labelled)


def flow(value: object) -> str:
    """A value as one line of YAML (names with odd characters get quoted)."""
    import yaml

    text: str = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000)
    return text.removesuffix("\n...\n").strip()  # a plain scalar ends its document there


def relative_to(path: Path, config_dir: Path) -> str:
    """`path` as a config in `config_dir` names it (abspath, not resolve: a symlinked file is
    named as the user named it)."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(config_dir))).as_posix()


def _npz_source(path: Path, input_names: list[str], inputs) -> dict[str, Any]:
    import zipfile

    import numpy as np

    from compress.data.archives import UnsafeArchive
    from compress.data.npz import check_archive

    try:
        check_archive(path)
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, UnsafeArchive) as e:
        raise DataError(f"--data {path}: not a readable .npz file ({e})") from None
    labels = next((k for k in keys if k.lower() in LABEL_NAMES and k not in input_names), None)
    arrays = [k for k in keys if k != labels]
    names = input_names if input_names and set(input_names) <= set(keys) else arrays
    # Keys feed the model's inputs in order: named as the inputs, or as many as there are.
    if not names or (input_names and len(names) != len(input_names)):
        raise DataError(
            f"--data {path}: the model takes {len(input_names)} input(s) "
            f"({', '.join(input_names)}) but the file has {len(arrays)} array(s) "
            f"({', '.join(arrays) or 'none'}); save one array per input, named as the inputs"
        )
    return {"inputs": names} | ({"labels": labels} if labels else {})


def _csv_source(path: Path, input_names: list[str], inputs) -> dict[str, Any]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"--data {path}: cannot read the CSV file ({e})") from None
    labels = next((c for c in header if c.strip().lower() in LABEL_NAMES), None)
    name = input_names[0] if input_names else "x"
    if not labels:
        return {"inputs": [name]}
    # Named columns, so data.calibration (which has no labels) does not read the label column.
    return {"inputs": [name], "columns": [c for c in header if c != labels], "labels": labels}


def _image_source(path: Path, input_names: list[str], inputs) -> dict[str, Any]:
    shape = inputs[0]["shape"] if inputs and len(inputs) == 1 else None
    if not shape or len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
        raise DataError(
            f"--data {path}: an image folder needs a model with one input shaped [batch, "
            "channels, height, width] recorded in it (ONNX or .pt2); give an .npz instead"
        )
    channels, height, width = shape[1:]
    if channels not in (1, 3):
        raise DataError(f"--data {path}: the model takes {channels} channels, images give 1 or 3")
    image = {"size": [height, width], "channels": channels}
    return {"inputs": [inputs[0]["name"]], "image": image}
