"""The dynamo exporter reads torchlib's functions once per process, and every export gets a
registry of its own: what one export registers is not seen by the next."""

from __future__ import annotations

import importlib

import torch

from compress.torch.torchlib_once import read_once


def test_the_functions_are_read_once_and_each_export_gets_its_own_registry():
    from torch.onnx._internal._lazy_import import onnxscript_apis
    from torch.onnx._internal.exporter import _registration

    read_once()
    read_once(now=True)  # idempotent
    apis = importlib.import_module(onnxscript_apis._name)
    assert apis.get_torchlib_ops() is apis.get_torchlib_ops()  # read once, then kept

    first = _registration.ONNXRegistry.from_torchlib(opset_version=18)
    second = _registration.ONNXRegistry.from_torchlib(opset_version=18)
    assert first is not second and first.functions == second.functions
    assert first.opset_version == second.opset_version == 18
    assert _registration.ONNXRegistry.from_torchlib(opset_version=20).opset_version == 20

    target = torch.ops.aten.relu.default
    first.register_op(target, lambda x: x)  # an export's custom op
    assert len(first.get_decomps(target)) == len(second.get_decomps(target)) + 1
    third = _registration.ONNXRegistry.from_torchlib(opset_version=18)
    assert len(third.get_decomps(target)) == len(second.get_decomps(target))
