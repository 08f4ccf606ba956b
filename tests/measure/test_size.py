"""MACs and weight sparsity are read off the ONNX file, and agree with the layers' arithmetic."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from compress.measure.macs import count_macs
from compress.measure.size import count_params, weight_sparsity


def export(module, path, shape=(2, 1, 8, 8)):
    torch.onnx.export(
        module,
        (torch.zeros(*shape),),
        str(path),
        dynamo=False,
        input_names=["x"],
        dynamic_axes={"x": {0: "batch"}},
    )
    return path


def test_macs_of_a_conv_and_a_linear_layer(tmp_path):
    module = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(4 * 64, 10),
    )  # fmt: skip
    path = export(module, tmp_path / "m.onnx")
    conv = 4 * 8 * 8 * (1 * 3 * 3)  # output elements x kernel volume x input channels
    linear = 10 * 256
    proto = onnx.load(str(path))
    assert count_macs(proto, [np.zeros((1, 1, 8, 8), np.float32)]) == conv + linear
    assert count_params(proto) == 4 * 9 + 4 + 256 * 10 + 10


def test_sparsity_counts_exact_zeros_of_the_weights(tmp_path):
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10, bias=False))
    with torch.no_grad():
        module[1].weight[:, :32] = 0
    path = export(module, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    assert weight_sparsity(proto) == 0.5
    weights = numpy_helper.to_array(proto.graph.initializer[0])
    assert np.count_nonzero(weights) == 320


def test_a_model_with_external_data_is_measured_whole_and_read_once(tmp_path, monkeypatch):
    """Weights in model.onnx.data count in its size and gzip size, and its footprint (MACs,
    params, sparsity) is the one the same model saved in one file has."""
    from compress.measure.size import footprint, gzip_bytes, size_bytes
    from compress.models import onnx_files

    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10, bias=False))
    with torch.no_grad():
        module[1].weight[:5] = 0
    one_file = export(module, tmp_path / "one.onnx")
    monkeypatch.setattr(onnx_files, "EXTERNAL_BYTES", 1000)
    split = tmp_path / "split.onnx"
    onnx_files.save_onnx(onnx.load(str(one_file)), split)
    data = onnx_files.data_file(split)
    assert data.exists()
    assert size_bytes(split) == split.stat().st_size + data.stat().st_size
    assert gzip_bytes(split) > gzip_bytes(tmp_path / "split.onnx.data") > 0
    sample = [np.zeros((1, 1, 8, 8), np.float32)]
    whole, parted = footprint(one_file, sample), footprint(split, sample)
    assert (parted.macs, parted.params, parted.sparsity) == (640, 640, 0.5)
    assert (whole.macs, whole.params, whole.sparsity) == (640, 640, 0.5)
