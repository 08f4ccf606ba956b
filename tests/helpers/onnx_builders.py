"""Tiny ONNX models: graphs built with onnx.helper for the int8 recovery tests (no export, no
torch), and an untrained digits model exported from torch (`small_onnx`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18


def model(nodes, inputs, outputs, initializers: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        outputs,
        [
            numpy_helper.from_array(v.astype(np.float32) if v.dtype.kind == "f" else v, k)
            for k, v in initializers.items()
        ],
    )
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    built.ir_version = 9
    onnx.checker.check_model(built, full_check=True)
    return built


def float_input(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def conv_chain(rng: np.random.Generator, activation: str = "Relu") -> onnx.ModelProto:
    """x -> Conv 3x3 (3->8) -> BatchNorm -> act -> depthwise 3x3 -> act -> Conv 1x1 (8->4).

    The first convolution's output channels have ranges spread over three decades, as
    BatchNorm folding leaves them in real networks."""
    spread = np.logspace(-1.5, 1.5, 8).reshape(8, 1, 1, 1)
    weights = {
        "w1": rng.normal(size=(8, 3, 3, 3)) * spread,
        "b1": rng.normal(size=8),
        "gamma": rng.uniform(0.5, 2, 8),
        "beta": rng.normal(size=8),
        "mean": rng.normal(size=8),
        "var": rng.uniform(0.5, 2, 8),
        "w2": rng.normal(size=(8, 1, 3, 3)),
        "b2": rng.normal(size=8),
        "w3": rng.normal(size=(4, 8, 1, 1)),
        "b3": rng.normal(size=4),
    }
    if activation == "Clip":
        weights |= {"low": np.array(0.0), "high": np.array(6.0)}

    def act(src, dst, name):
        extra = ["low", "high"] if activation == "Clip" else []
        return helper.make_node(activation, [src, *extra], [dst], name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["bn"], "bn"
        ),
        act("bn", "a1", "act1"),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], "dw", group=8, pads=[1, 1, 1, 1]),
        act("c2", "a2", "act2"),
        helper.make_node("Conv", ["a2", "w3", "b3"], ["y"], "pw"),
    ]
    return model(
        nodes, [float_input("x", [None, 3, 8, 8])], [float_input("y", [None, 4, 8, 8])], weights
    )


def run(built: onnx.ModelProto | Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = built.SerializeToString() if isinstance(built, onnx.ModelProto) else str(built)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def save(built: onnx.ModelProto, path: Path) -> Path:
    onnx.save(built, str(path))
    return path


ATTENTION_SEQ, ATTENTION_WIDTH = 6, 8  # attention_graph's sizes
SMOOTH_WIDTH, SMOOTH_SEQ = 16, 5  # layernorm_graph's sizes


def attention_graph(rng, mask_value: float = -np.inf) -> onnx.ModelProto:
    """One attention head as the TorchScript exporter writes scaled_dot_product_attention:
    scores + Where(mask, 0, -inf) -> Softmax -> MatMul with V."""
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], "q_proj"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], "k_proj"),
        helper.make_node("MatMul", ["x", "wv"], ["v"], "v_proj"),
        helper.make_node("Transpose", ["k"], ["kt"], "k_t", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"], "scores"),
        helper.make_node("Cast", ["attention_mask"], ["keep"], "keep", to=TensorProto.BOOL),
        helper.make_node("Unsqueeze", ["keep", "axis1"], ["keep3"], "keep3"),
        helper.make_node("Where", ["keep3", "zero", "minus"], ["bias"], "mask_bias"),
        helper.make_node("Add", ["scores", "bias"], ["masked"], "mask_add"),
        helper.make_node("Softmax", ["masked"], ["probs"], "softmax", axis=-1),
        helper.make_node("MatMul", ["probs", "v"], ["y"], "attend"),
    ]
    inputs = [
        float_input("x", [None, ATTENTION_SEQ, ATTENTION_WIDTH]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [None, ATTENTION_SEQ]),
    ]
    weights = {f"w{n}": rng.normal(size=(ATTENTION_WIDTH, ATTENTION_WIDTH)) for n in "qkv"}
    weights |= {"zero": np.array(0.0), "minus": np.array(mask_value), "axis1": np.array([1])}
    return model(nodes, inputs, [float_input("y", [None, ATTENTION_SEQ, ATTENTION_WIDTH])], weights)


def layernorm_graph(rng, residual: bool) -> onnx.ModelProto:
    """x -> LayerNorm (a few channels scaled 30-40x: the outliers) -> MatMul, and -> Reshape ->
    Gemm (GPT-2's Conv1D); with `residual` the LayerNorm's output is also added to x."""
    gamma = np.ones(SMOOTH_WIDTH)
    gamma[[2, 7]] = [40.0, 30.0]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["t"], "norm", axis=-1),
        helper.make_node("MatMul", ["t", "w1"], ["y1"], "matmul"),
        helper.make_node("Reshape", ["t", "flat"], ["t2"], "reshape"),
        helper.make_node("Gemm", ["t2", "w2"], ["y2"], "gemm", transB=1),
    ]
    outputs = [float_input("y1", [None, SMOOTH_SEQ, 8]), float_input("y2", [None, 8])]
    if residual:
        nodes.append(helper.make_node("Add", ["t", "x"], ["y3"], "residual"))
        outputs.append(float_input("y3", [None, SMOOTH_SEQ, SMOOTH_WIDTH]))
    weights = {
        "gamma": gamma,
        "beta": rng.normal(size=SMOOTH_WIDTH),
        "w1": rng.normal(size=(SMOOTH_WIDTH, 8)),
        "w2": rng.normal(size=(8, SMOOTH_WIDTH)),
        "flat": np.array([-1, SMOOTH_WIDTH]),
    }
    return model(nodes, [float_input("x", [None, SMOOTH_SEQ, SMOOTH_WIDTH])], outputs, weights)


def small_onnx(path: Path, batch: int = 2, dynamic: bool = True) -> Path:
    """An untrained Flatten+Linear digits model as ONNX (legacy exporter: fast, fixed names)."""
    import torch

    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    axes = {"x": {0: "batch"}} if dynamic else None
    torch.onnx.export(
        module,
        (torch.zeros(batch, 1, 8, 8),),
        str(path),
        dynamic_axes=axes,
        dynamo=False,
        input_names=["x"],
    )
    return path
