"""Small helpers for editing an ONNX graph's weights in place (onnx + numpy_helper only).

The recovery passes (equalize, smooth, bias correction, mask handling) rewrite initializers and
need the same few questions answered: who produces and who reads a tensor, what constant a
tensor holds, an attribute with its default. A weight is only rewritten when the node being
changed is its one reader, so a shared initializer never changes behind another node's back.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper


class Graph:
    """Index of one onnx.GraphProto: producers, readers and initializers by tensor name.

    Build it again after adding or removing nodes; rewriting initializers keeps it valid.
    """

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.graph.node:
            for name in dict.fromkeys(node.input):  # a node reading a tensor twice counts once
                if name:
                    self.readers[name].append(node)
        self.outputs = {o.name for o in self.graph.output}

    def array(self, name: str) -> np.ndarray | None:
        """The constant `name` holds (an initializer or a Constant node's value), else None."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None:
                return numpy_helper.to_array(value.t)
        return None

    def constant(self, name: str) -> np.ndarray:
        """The constant `name` holds, where the caller has found it is one."""
        value = self.array(name)
        if value is None:
            raise ValueError(f"tensor {name!r} is not a constant")
        return value

    def only_reader(self, tensor: str) -> onnx.NodeProto | None:
        """The one node reading `tensor` when it is not also a graph output, else None."""
        readers = self.readers.get(tensor, [])
        return readers[0] if len(readers) == 1 and tensor not in self.outputs else None

    def own_weight(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        """Input `index` of `node` as an array, when it is an initializer only `node` reads.

        Exporters share equal constants: the dynamo exporter stores equal initializers once,
        the TorchScript exporter reads them through Identity nodes, so every freshly
        initialised LayerNorm of a model reads the same ones. A shared vector (a bias, a
        LayerNorm scale) is copied for `node` alone; a shared matrix is not (tied embeddings
        would double the file): None."""
        if index >= len(node.input):
            return None
        name = node.input[index]
        alias = self.producer.get(name)
        if name not in self.initializers:
            if (
                alias is None
                or alias.op_type != "Identity"
                or alias.input[0] not in self.initializers
            ):
                return None
            source = alias.input[0]
        else:
            source = name
        value = numpy_helper.to_array(self.initializers[source])
        shared = len(self.readers[name]) > 1 or (source != name and len(self.readers[source]) > 1)
        if shared and value.ndim > 1:
            return None
        if shared or source != name:
            self.readers[name].remove(node)
            private = (
                self.add_initializer(f"{source}_{node.name or 'copy'}", value) if shared else source
            )
            node.input[index] = private
            self.readers[private] = [node]
        return value

    def weight(self, node: onnx.NodeProto, index: int) -> np.ndarray:
        """`own_weight`, where the caller has found `node` has one at `index`."""
        value = self.own_weight(node, index)
        if value is None:
            raise ValueError(f"node {node.name!r}: input {index} is not a weight of its own")
        return value

    def set_array(self, name: str, value: np.ndarray) -> None:
        """Replace initializer `name`'s data, keeping its name and dtype."""
        tensor = self.initializers[name]
        dtype = numpy_helper.to_array(tensor).dtype
        tensor.CopyFrom(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))

    def add_initializer(self, name: str, value: np.ndarray) -> str:
        """A new initializer under a name the graph does not use yet; returns the name."""
        taken = set(self.initializers) | set(self.producer) | {i.name for i in self.graph.input}
        unique, count = name, 1
        while unique in taken:
            unique, count = f"{name}_{count}", count + 1
        tensor = numpy_helper.from_array(value, unique)
        self.graph.initializer.append(tensor)
        self.initializers[unique] = self.graph.initializer[-1]
        return unique


def attribute(node: onnx.NodeProto, name: str, default=None):
    """A node attribute's value, or `default` when the node does not set it."""
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def load(path) -> onnx.ModelProto:
    return onnx.load(str(path))


def save(model: onnx.ModelProto, path) -> None:
    from compress.models.onnx_files import save_onnx

    save_onnx(model, path)
