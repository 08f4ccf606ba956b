"""What a model is made of, for `compress init`: multiply-accumulates in convolutions against
those in matrix products (MatMul, Gemm, Linear), and the weights in embedding tables.

An ONNX graph is run on one sample shaped like its inputs (symbolic dims, such as a sequence
length, as 1) and its MACs counted as reports count them (compress.measure.macs); a
torch.export program is read with the shapes it records (symbolic dims count as 1: one sample,
one token). A TorchScript archive or a state_dict records no activation shapes, so there the
weights stand in for MACs: 4-D weights are convolutions, 2-D ones matrix products (or embedding
tables by their name).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["convolutional", "matmul", "unknown"]
WEIGHT_SHARE = 0.1


@dataclass(frozen=True)
class ModelMakeup:
    conv_macs: int = 0
    matmul_macs: int = 0
    embedding_weights: int = 0  # values in embedding tables (a lookup costs no MACs)
    total_weights: int = 0  # every float weight, embeddings included
    by_weights: bool = False  # counted from weights only (no shapes were recorded)

    @property
    def kind(self) -> Kind:
        # Counted by weights, a CNN's classifier can outweigh its convolutions (which do most
        # of the work on every pixel): a tenth of the weights in convolutions makes it one.
        if self.conv_share > (WEIGHT_SHARE if self.by_weights else 0.5):
            return "convolutional"
        return "matmul" if self.matmul_macs or self.embedding_weights else "unknown"

    @property
    def conv_share(self) -> float:
        return self.conv_macs / max(self.conv_macs + self.matmul_macs, 1)

    def describe(self) -> str:
        what = "weights" if self.by_weights else "MACs"
        text = f"{self.conv_share:.0%} of the {what} in convolutions"
        if self.embedding_weights:
            text += f", {self.embedding_weights / max(self.total_weights, 1):.0%} of the weights "
            text += "in embedding tables"
        return text


def _count(shape) -> int:
    """Elements of a shape whose symbolic dims count as 1."""
    return math.prod(d if isinstance(d, int) and d > 0 else 1 for d in shape)


def onnx_makeup(proto, sample: list | None) -> ModelMakeup:
    """An ONNX graph: MACs as compress.measure.macs counts them on `sample` (one sample of
    the inputs); embedding tables are the constant tables Gather reads. Without a sample (an
    input model.inputs cannot declare), the weights stand in, as for a state_dict."""
    from onnx import helper, numpy_helper

    from compress.measure.macs import macs_by_op_type

    if sample is None:
        import torch

        tensors = {
            i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
            for i in proto.graph.initializer
        }
        return weights_makeup(tensors)
    by_type = macs_by_op_type(proto, sample)
    conv = sum(macs for op, macs in by_type.items() if "Conv" in op)
    matmul = sum(macs for op, macs in by_type.items() if "Conv" not in op)
    weights = {i.name: list(i.dims) for i in proto.graph.initializer}
    embedding = sum(
        _count(weights[n.input[0]])
        for n in proto.graph.node
        if n.op_type == "Gather" and n.input[0] in weights
    )
    total = sum(
        _count(dims)
        for i, dims in zip(proto.graph.initializer, weights.values(), strict=True)
        if helper.tensor_dtype_to_np_dtype(i.data_type).kind == "f"
    )
    return ModelMakeup(conv, matmul, embedding, total)


CONVOLUTIONS = ("aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.convolution")
PRODUCTS = ("aten.linear", "aten.addmm", "aten.mm", "aten.matmul", "aten.bmm")


def program_makeup(program) -> ModelMakeup:
    """A torch.export program: weights are its parameters; shapes come from the traced graph."""
    params = {**dict(program.named_parameters()), **dict(program.named_buffers())}
    signature = program.graph_signature
    placeholder_weights = {**signature.inputs_to_parameters, **signature.inputs_to_buffers}
    conv = matmul = embedding = 0
    for node in program.graph.nodes:
        target = str(node.target)
        if node.op != "call_function":
            continue
        shape = _weight_shape(node, target, placeholder_weights, params)
        if shape is None:
            continue
        if target.startswith("aten.embedding"):
            embedding += _count(shape)
            continue
        out = getattr(node.meta.get("val"), "shape", None)
        if out is None:
            continue
        if target.startswith(CONVOLUTIONS):
            conv += _count(shape) * _count(out[2:])
        elif target.startswith(PRODUCTS):
            matmul += _count(shape) * _count(out[1:-1])
    total = sum(p.numel() for p in params.values() if p.is_floating_point())
    return ModelMakeup(conv, matmul, embedding, total)


def _weight_shape(node, target: str, placeholder_weights: dict, params: dict) -> Any:
    """The shape of the constant weight a conv / product / embedding node reads, else None."""
    if target.startswith("aten.embedding"):
        index = 0
    elif target.startswith("aten.addmm"):
        index = 2
    elif target.startswith((*CONVOLUTIONS, *PRODUCTS)):
        index = 1
    else:
        return None
    if len(node.args) <= index or getattr(node.args[index], "op", None) != "placeholder":
        return None
    name = placeholder_weights.get(node.args[index].name)
    return tuple(params[name].shape) if name in params else None


def weights_makeup(state: dict) -> ModelMakeup:
    """From a state_dict's tensors alone: 4-D and 5-D weights (3-D ones named conv) are
    convolutions, 2-D ones matrix products, or embedding tables when named like one."""
    conv = matmul = embedding = total = 0
    for name, tensor in state.items():
        if not getattr(tensor, "is_floating_point", lambda: False)():
            continue
        total += tensor.numel()
        if tensor.dim() in (4, 5) or (tensor.dim() == 3 and "conv" in name.lower()):
            conv += tensor.numel()
        elif tensor.dim() == 2 and "embed" in name.lower():
            embedding += tensor.numel()
        elif tensor.dim() == 2:
            matmul += tensor.numel()
    return ModelMakeup(conv, matmul, embedding, total, by_weights=True)
