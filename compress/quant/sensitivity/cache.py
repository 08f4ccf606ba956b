"""What quantizing one model several ways can share, kept on the run's Context: the float
model's outputs on data.eval (every quantize.auto candidate and every fallback round is judged
against them) and each quantization scheme's sensitivity.

A sensitivity is reused for another quantization of the same file when the scheme matches (the
settings that change how a node is quantized: per-channel, activation type, calibration) and it
scored every node the other quantization changes: static per-channel with depthwise convolutions
in float, or with only the compute ops quantized, is served by static per-channel's ranking.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from compress.data import Dataset
    from compress.quant.sensitivity import Sensitivity


@dataclass(frozen=True)
class FileKey:
    """A file as it is now: the same path rewritten is another key."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileKey:
        stat = os.stat(path)
        return cls(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@dataclass
class _Entry:
    source: FileKey
    scheme: str
    sensitivity: Sensitivity


@dataclass
class AnalysisCache:
    _references: dict[tuple[FileKey, str, int, str | None], np.ndarray] = field(
        default_factory=dict
    )
    _sensitivities: list[_Entry] = field(default_factory=list)
    _ranges: dict[tuple[Any, ...], Path] = field(default_factory=dict)

    def reference_outputs(
        self, source: Path, dataset: Dataset, output: int, metric: str | None = None
    ) -> np.ndarray:
        """Output `output` of the ONNX model `source` on every sample of `dataset` (as `metric`
        judges it: a decoder's token summaries for the token metrics)."""
        from compress.measure.evaluate import onnx_output
        from compress.measure.perplexity import TOKEN_METRICS

        form = metric if metric in TOKEN_METRICS else None
        key = (FileKey.of(source), dataset.where, output, form)
        if key not in self._references:
            inputs = list(dataset.inputs.values())
            self._references[key] = onnx_output(source, inputs, output, form)
        return self._references[key]

    def sensitivity(self, source: Path, scheme: str, changed: set[str]) -> Sensitivity | None:
        """A sensitivity of `source` under `scheme` that scored every node in `changed`."""
        key = FileKey.of(source)
        for entry in self._sensitivities:
            if (
                entry.source == key
                and entry.scheme == scheme
                and changed <= entry.sensitivity.quantized
            ):
                return entry.sensitivity
        return None

    def remember(self, source: Path, scheme: str, sensitivity: Sensitivity) -> None:
        self._sensitivities.append(_Entry(FileKey.of(source), scheme, sensitivity))

    def calibration_ranges(
        self, model: Path, settings: tuple[Any, ...], collect: Callable[[], Path]
    ) -> Path:
        """The activation ranges of `model` calibrated with `settings`: collected once for a
        model's content, then shared (quantize.auto's static candidates calibrate the same
        pre-processed graph, each in a file of its own)."""
        from compress.files import file_sha256

        key = (file_sha256(model), settings)
        if key not in self._ranges:
            self._ranges[key] = collect()
        return self._ranges[key]
