"""Models and checks for the batch tests: good models, a corrupt file, models that crash or hang
their worker process, and a look for worker processes left running."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from tests.helpers.configs import CNN_CONFIG, write_config
from tests.helpers.onnx_builders import small_onnx
from tests.helpers.paths import ROOT

# A whole pickled module (loaded with --trust-pickle) that misbehaves in forward, which the
# run's first check calls: the worker process really dies or hangs.
MISBEHAVING = """\
import ctypes
import time

import torch


class Misbehaving(torch.nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.linear = torch.nn.Linear(64, 10)

    def forward(self, x):
        if self.how == "segfault":
            ctypes.string_at(0)
        if self.how == "hang":
            time.sleep(3600)
        return self.linear(x.flatten(1))
"""


def misbehaving_model(folder: Path, name: str, how: str) -> Path:
    """`folder/name`, a pickled Misbehaving(how); its class file sits beside it, where the
    loader looks for it."""
    return pickled_model(folder / name, "misbehaving", MISBEHAVING, lambda m: m.Misbehaving(how))


def pickled_model(path: Path, module_name: str, source: str, build: Callable) -> Path:
    """`path`, torch.save of `build(module)`: `module` is `source` written beside it as
    MODULE_NAME.py, where the loader looks for the class pickle names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = path.parent / f"{module_name}.py"
    written.write_text(source)
    spec = importlib.util.spec_from_file_location(module_name, written)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pickle records the class by this module name
    try:
        spec.loader.exec_module(module)
        torch.save(build(module), path)
    finally:
        del sys.modules[module_name]
    return path


def corrupt_model(path: Path) -> Path:
    path.write_bytes((ROOT / "sample_models" / "digits_cnn.pt2").read_bytes()[:3000])
    return path


def good_models(folder: Path, *relative: str) -> None:
    for name in relative:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        small_onnx(folder / name)


def batch_config(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_config(folder, CNN_CONFIG)


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def statuses(summary: dict) -> dict[str, tuple[str, str | None]]:
    return {row["model"]: (row["status"], row["reason"]) for row in summary["models"]}


def fewer_samples(npz: Path) -> None:
    """Rewrite a data file with its last sample left out: other bytes, still valid data."""
    import numpy as np

    with np.load(npz) as arrays:
        kept = {key: arrays[key][:-1] for key in arrays.files}
    np.savez(npz, **kept)
