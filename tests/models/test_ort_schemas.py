"""An ONNX model with ONNX Runtime's own ONNX-domain operator (a fused decoder's RMSNorm) loads;
one without any loads without copying ONNX Runtime's schemas (~0.3 s) into onnx's registry."""

import subprocess
import sys

import onnx
from onnx import TensorProto, helper

from tests.helpers.paths import ROOT

LOAD = """
import sys
from pathlib import Path
from compress.config import ModelSection
from compress.models import load_model, ort_schemas
for path in sys.argv[1:]:
    load_model(Path(path), ModelSection(), Path(path).parent)
    print(Path(path).name, ort_schemas.register.cache_info().currsize)
"""


def saved(path, op_type, inputs, initializers):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    node = helper.make_node(op_type, inputs, ["y"], domain="")
    graph = helper.make_graph([node], "g", [x], [y], initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_ort_schemas_are_copied_only_for_a_model_that_uses_one(tmp_path):
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [4], [1.0] * 4)
    plain = saved(tmp_path / "plain.onnx", "Relu", ["x"], [])
    rms = saved(tmp_path / "rms.onnx", "SimplifiedLayerNormalization", ["x", "scale"], [scale])
    command = [sys.executable, "-c", LOAD, str(plain), str(rms)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["plain.onnx", "0", "rms.onnx", "1"]
