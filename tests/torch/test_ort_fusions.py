"""The fusions leave what the quantizers read: a tied head's MatMul(x, Transpose(table)) stays a
MatMul (ONNX Runtime's FusedMatMul would keep a 0.5B model's head out of quantize.int4)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compress.torch.ort_fusions import fuse_decoder


def test_a_tied_head_stays_a_matmul_the_quantizer_reads():
    import onnx_ir as ir

    table = numpy_helper.from_array(np.ones((1024, 16), np.float32), "table")
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["embedded"]),
        helper.make_node("Transpose", ["table"], ["head"], perm=[1, 0]),
        helper.make_node("MatMul", ["embedded", "head"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "tied",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", 1024])],
        [table],
    )  # fmt: skip
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    assert fuse_decoder(model, max_positions=64) == {}
    ops = [node.op_type for node in model.graph]
    assert ops.count("MatMul") == 1 and "FusedMatMul" not in ops
    onnx.checker.check_model(ir.to_proto(model))
