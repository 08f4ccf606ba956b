"""Configs for the sample digits CNN, written beside a copy of the sample data."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.helpers.paths import SAMPLES


def write_config(folder: Path, text: str, name: str = "config.yaml") -> Path:
    """A config in `folder`, with the sample data copied beside it (paths are relative)."""
    for npz in SAMPLES.glob("*.npz"):
        target = folder / npz.name
        if not target.exists():
            shutil.copyfile(npz, target)
    path = folder / name
    path.write_text(text)
    return path


# Timed briefly: latency is measured, not precise (the benchmark checks speed), and a busy
# machine never settles it, which would take report.max_seconds' default of 5 s a run.
CNN_CONFIG = """\
version: 1
data:
  calibration: {path: digits_calib.npz, inputs: [x], limit: 64}
  eval: {path: digits_eval.npz, inputs: [x], labels: y}
passes:
  - type: quantize.static
    per_channel: true
report: {batch_sizes: [8], min_runs: 5, min_seconds: 0, max_seconds: 0.2, warmup_runs: 1}
"""
STATE_DICT_CONFIG = CNN_CONFIG.replace(  # the digits CNN given as a state_dict
    "version: 1\n", "version: 1\nmodel: {arch: arch.py:DigitsCNN}\n"
)
