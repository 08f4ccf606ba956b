"""Activation ranges for static int8, computed once per pass, for one or several methods.

ONNX Runtime's quantize_static runs its calibrator every time it is called: the accuracy-aware
fallback re-quantizes up to max_fallback_steps times, and trying three calibration methods
would run three calibrators. Here the model is run once over the calibration data with ONNX
Runtime's own calibration outputs exposed (the tensors its calibrator would pick), and each
batch feeds ONNX Runtime's own range computations: min/max as MinMaxCalibrater merges them,
HistogramCollector as the percentile (2048 bins, symmetric) and entropy (128 bins) calibrators
configure it. The ranges reach quantize_static through its calibration cache file.

`calibration: auto` fits all three on a subset of data.calibration, quantizes with each, and
keeps the one whose outputs are closest to the float model's on held-out calibration samples
(never data.eval, which judges the result).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from compress.measure.decoder_feeds import completed_feeds, session_inputs
from compress.measure.fixed_batch import chunks
from compress.measure.runtime import fixed_batch

METHODS = ("minmax", "percentile", "entropy")
AUTO_FIT_SAMPLES = 64  # calibration samples the trials are fitted on
AUTO_HELD_OUT = 32  # at most, and at most a quarter of data.calibration


def ort_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[name]


def default_op_types() -> list[str]:
    """What quantize_static quantizes (and calibrates) when op_types is not given."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


class RangeCollector:
    """The calibration statistics of `methods` for `model`, fed batch by batch."""

    def __init__(
        self,
        model: Path,
        op_types: list[str] | None,
        methods: tuple[str, ...],
        percentile: float,
        workdir: Path,
    ):
        import onnxruntime as ort
        from onnxruntime.quantization.calibrate import HistogramCalibrater, HistogramCollector

        from compress.models.onnx_files import keeps_external_data

        calibrater = HistogramCalibrater(
            model,
            op_types or default_op_types(),
            augmented_model_path=str(workdir / f"{model.stem}.augmented.onnx"),
            use_external_data_format=keeps_external_data(model),
        )
        calibrater.augment_graph()  # exposes the tensors to calibrate as outputs, saves it
        self.tensors = sorted(calibrater.tensors_to_calibrate)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            calibrater.augmented_model_path, options, providers=["CPUExecutionProvider"]
        )
        self.fixed_batch = fixed_batch(self._session)
        settings = {  # as onnxruntime.quantization.calibrate.create_calibrator sets them up
            "percentile": {"symmetric": True, "num_bins": 2048},
            "entropy": {"symmetric": False, "num_bins": 128},
        }
        self._histograms = {
            method: HistogramCollector(
                method=method,
                num_quantized_bins=128,
                percentile=percentile,
                scenario="same",
                **settings[method],
            )
            for method in methods
            if method in settings
        }
        self._lowest: dict[str, np.ndarray] = {}
        self._highest: dict[str, np.ndarray] = {}

    def update(self, feeds: dict[str, np.ndarray]) -> None:
        # a decoder's data feeds its token ids and mask: its cache starts empty
        feeds = completed_feeds(session_inputs(self._session), list(feeds.values()))
        values = dict(zip(self.tensors, self._session.run(self.tensors, feeds), strict=True))
        for name, value in values.items():
            if value.size:
                low, high = np.nanmin(value), np.nanmax(value)
                self._lowest[name] = np.minimum(self._lowest.get(name, low), low)
                self._highest[name] = np.maximum(self._highest.get(name, high), high)
        with contextlib.redirect_stdout(io.StringIO()):  # the collectors print progress
            for collector in self._histograms.values():
                collector.collect(values)

    def keep_only(self, method: str) -> None:
        """Stop collecting for the other methods (after calibration: auto has chosen)."""
        self._histograms = {m: c for m, c in self._histograms.items() if m == method}

    def ranges(self, method: str):
        """The TensorsData quantize_static would compute with `method` on the data seen."""
        from onnxruntime.quantization.calibrate import TensorsData

        if method == "minmax":
            data = {
                name: (np.float32(self._lowest[name]), np.float32(self._highest[name]))
                for name in self._lowest
            }
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                data = self._histograms[method].compute_collection_result()
        return TensorsData(ort_method(method), data)


def save_ranges(ranges, path: Path) -> Path:
    from onnxruntime.quantization.calibrate import save_tensors_data

    save_tensors_data(ranges, path)
    return path


def batches(samples: list[np.ndarray], names: list[str], batch_size: int, fixed: int | None):
    """Feeds of `batch_size` samples, inputs by name; a model with a `fixed` batch gets batches
    of that size, the last one padded with copies of a sample (which leave its ranges alone).
    A decoder's data gives its first inputs only (token ids and mask): the collector completes
    the feed with the position ids and an empty cache."""
    for part, _ in chunks(samples, batch_size, fixed):
        yield dict(zip(names[: len(part)], part, strict=True))


def split_for_auto(count: int) -> tuple[slice, slice, slice]:
    """data.calibration's samples as (fit the trials, held out to judge them, the rest)."""
    held_out = min(AUTO_HELD_OUT, max(1, count // 4))
    fit = min(AUTO_FIT_SAMPLES, count - held_out)
    return slice(0, fit), slice(count - held_out, count), slice(fit, count - held_out)
