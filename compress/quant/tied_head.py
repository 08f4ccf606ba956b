"""A language model's head tied to its embedding table, quantized once and shared with the lookup.

Torch exports a tied head as MatMul(x, Transpose(table)), the [vocab, hidden] table that the
embedding Gather also reads. Quantized apart, the table was stored twice (an 8-bit head and an
int8 lookup: half of a 0.5B decoder's int4 file) and the head was first given a transposed
float copy of it (the peak of the run's memory). Here the head is quantized once, by ONNX
Runtime's round-to-nearest kernel, straight from the table: [vocab, hidden] is already
MatMulNBits' [N, K] layout, so only a few thousand rows at a time are transposed for the
kernel. The lookup then reads the head's blocks through com.microsoft GatherBlockQuantized
(Reshape to [vocab, padded hidden * bits / 8], and a Slice when hidden is not a whole number
of blocks), as ONNX Runtime GenAI's model builder does for tied embeddings: the file holds one
copy. Where the lookup is to stay float (embeddings_int8: false) it keeps the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from compress.quant.weight_rewrites import drop_unused_initializers
from compress.records import Positive, Record

CHUNK_ROWS = 8192  # table rows quantized at a time: their transposed copy is 29 MB at 896 wide
FLOAT = 1  # onnx.TensorProto.FLOAT


class TiedTable(Record):
    """An embedding table that a head reads transposed, quantized once for both."""

    table: str
    head: str
    lookups: list[str]
    bits: Literal[4, 8]
    block_size: Positive
    shared: bool = True  # the lookups read the head's blocks (false: they keep the float table)

    def line(self) -> str:
        held = (
            f"shared by {self.head} and {', '.join(self.lookups)} (GatherBlockQuantized): one copy"
            if self.shared
            else f"for {self.head}; {', '.join(self.lookups)} keep the float table"
        )
        return (
            f"tied table {self.table} quantized once at {self.bits} bits "
            f"(block {self.block_size}), {held}"
        )


class TiePlan(Protocol):
    """What quantizing a tied head reads of a weight plan (compress.quant.nbits.WeightPlan)."""

    @property
    def algorithm(self) -> str: ...
    @property
    def excluded(self) -> frozenset[str]: ...
    @property
    def share_tied(self) -> bool: ...
    def bits_for(self, node: str) -> Literal[4, 8]: ...
    def block_for(self, bits: int, rows: int) -> int: ...


@dataclass(frozen=True)
class QuantizedRows:
    """A [vocab, hidden] table in MatMulNBits' layout: B [vocab, blocks, block * bits / 8],
    scales [vocab, blocks], zero points [vocab, blocks packed to bytes] (None: symmetric)."""

    packed: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None


def tied_heads(model) -> list[tuple[str, str, list[str]]]:
    """(head MatMul, table, lookup Gathers) for each MatMul whose weight is a 2-D float table
    that a Gather on axis 0 reads, transposed: through a Transpose (perm [1, 0]), or as an
    initializer of its own that holds the table transposed (the exporter folded the Transpose,
    as it does on small models)."""
    import onnx

    from compress.quant.graph_edit import Graph, attribute

    graph = Graph(model)
    tables = {
        node.input[0]: graph.initializers[node.input[0]]
        for node in model.graph.node
        if node.op_type == "Gather"
        and attribute(node, "axis", 0) == 0
        and node.input[0] in graph.initializers
        and graph.initializers[node.input[0]].data_type == onnx.TensorProto.FLOAT
        and len(graph.initializers[node.input[0]].dims) == 2
    }
    found = []
    for node in model.graph.node:
        table = _transposed_table(graph, node, tables) if node.op_type == "MatMul" else None
        if table is not None:
            lookups = [
                n.name
                for n in graph.readers[table]
                if n.op_type == "Gather" and n.input[0] == table and attribute(n, "axis", 0) == 0
            ]
            found.append((node.name, table, lookups))
    return found


def _transposed_table(graph, matmul, tables: dict) -> str | None:
    """The table of `tables` that `matmul` reads transposed as its weight, else None."""
    from compress.quant.graph_edit import attribute

    weight = matmul.input[1]
    source = graph.producer.get(weight)
    if source is not None:
        perm = list(attribute(source, "perm", [1, 0]))
        if source.op_type == "Transpose" and source.input[0] in tables and perm == [1, 0]:
            return source.input[0]
        return None
    constant = graph.initializers.get(weight)
    if constant is None or len(constant.dims) != 2 or constant.data_type != FLOAT:
        return None
    for name, table in tables.items():
        if list(table.dims) == list(constant.dims)[::-1] and _equal_transposed(constant, table):
            return name
    return None


def _equal_transposed(weight, table) -> bool:
    """Whether initializer `weight` [K, N] holds initializer `table` [N, K] transposed (compared
    CHUNK_ROWS rows at a time)."""
    from onnx import numpy_helper

    matrix, rows = numpy_helper.to_array(weight), numpy_helper.to_array(table)
    return all(
        np.array_equal(matrix[:, start : start + CHUNK_ROWS].T, rows[start : start + CHUNK_ROWS])
        for start in range(0, len(rows), CHUNK_ROWS)
    )


def quantize_rows(table: np.ndarray, bits: int, block: int, symmetric: bool) -> QuantizedRows:
    """`table` [vocab, hidden] quantized by ORT's MatMulNBits kernel as the weight of
    x @ table.T, CHUNK_ROWS rows at a time (each chunk transposed and padded to whole blocks)."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

    kernel = quantize_matmul_4bits if bits == 4 else quantize_matmul_8bits
    vocab, hidden = table.shape
    blocks, per_byte = -(-hidden // block), 8 // bits
    packed = np.empty((vocab, blocks, block // per_byte), np.uint8)
    scales = np.empty((vocab, blocks), np.float32)
    zero_points = np.empty((vocab, -(-blocks // per_byte)), np.uint8)
    for start in range(0, vocab, CHUNK_ROWS):
        rows = table[start : start + CHUNK_ROWS]
        weight = np.zeros((blocks * block, len(rows)), np.float32)  # [K padded, N]
        weight[:hidden] = rows.T
        chunk = (
            np.zeros((len(rows), *packed.shape[1:]), np.uint8),
            np.zeros((len(rows), blocks), np.float32),
            np.zeros((len(rows), zero_points.shape[1]), np.uint8),
        )
        kernel(chunk[0], weight, chunk[1], chunk[2], block, len(rows), len(weight), symmetric)
        end = start + len(rows)
        packed[start:end], scales[start:end], zero_points[start:end] = chunk
    return QuantizedRows(packed, scales, None if symmetric else zero_points)


def quantize_tied_heads(model, plan: TiePlan) -> list[TiedTable]:
    """Rewrite each tied head of `model` (in place) as a MatMulNBits quantized from its table at
    the bits and block `plan` gives it, round to nearest (symmetric for rtn_symmetric),
    and when `plan.share_tied` its lookups as GatherBlockQuantized over the same initializers,
    the float table then dropped. Heads `plan` keeps in float are left alone."""
    from onnx import numpy_helper

    from compress.quant.graph_edit import Graph

    symmetric = plan.algorithm == "rtn_symmetric"
    done: list[TiedTable] = []
    for head, table, lookups in tied_heads(model):
        if head in plan.excluded or table in {t.table for t in done}:  # a 2nd head: the copy
            continue
        bits = plan.bits_for(head)
        share = plan.share_tied
        graph = Graph(model)
        values = numpy_helper.to_array(graph.initializers[table])
        block = plan.block_for(bits, values.shape[1])
        rows = quantize_rows(values, bits, block, symmetric)
        del values
        names = [graph.add_initializer(f"{table}_Q{bits}", rows.packed)]
        names.append(graph.add_initializer(f"{table}_scales", rows.scales))
        if rows.zero_points is not None:
            names.append(graph.add_initializer(f"{table}_zero_points", rows.zero_points))
        _rewrite(model, graph, (head, table, lookups if share else []), names, bits, block)
        done.append(TiedTable(table=table, head=head, lookups=lookups, bits=bits,
                              block_size=block, shared=share))  # fmt: skip
    if done:
        _drop_unread(model)
    return done


def _rewrite(model, graph, tie: tuple[str, str, list[str]], names: list[str], bits, block) -> None:
    """The head as MatMulNBits over `names` (B, scales[, zero points]); the lookups in `tie`
    as Reshape + GatherBlockQuantized (+ Slice to the hidden width)."""
    from onnx import helper

    head, table, lookups = tie
    vocab, hidden = (int(d) for d in graph.initializers[table].dims)
    padded = -(-hidden // block) * block
    nodes = []
    for node in model.graph.node:
        if node.name == head and node.op_type == "MatMul":
            quantized = helper.make_node(
                "MatMulNBits", [node.input[0], *names], list(node.output), f"{head}_Q{bits}",
                domain="com.microsoft", K=hidden, N=vocab, bits=bits, block_size=block,
            )  # fmt: skip
            quantized.metadata_props.extend(node.metadata_props)
            nodes.append(quantized)
        elif node.name in lookups and node.op_type == "Gather" and node.input[0] == table:
            nodes += _lookup(graph, node, names, (vocab, hidden, padded), bits, block)
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def _lookup(graph, gather, names: list[str], shape: tuple[int, int, int], bits, block) -> list:
    """Reshape (B to [vocab, padded * bits / 8]) -> GatherBlockQuantized [-> Slice] for `gather`."""
    from onnx import helper

    vocab, hidden, padded = shape
    stem = gather.name or gather.output[0]
    flat = graph.add_initializer(f"{stem}_shape", np.array([vocab, padded * bits // 8], np.int64))
    rows = f"{stem}_rows"
    nodes = [helper.make_node("Reshape", [names[0], flat], [rows], f"{stem}_reshape")]
    gathered = gather.output[0] if padded == hidden else f"{stem}_padded"
    nodes.append(
        helper.make_node(
            "GatherBlockQuantized", [rows, gather.input[1], *names[1:]], [gathered], gather.name,
            domain="com.microsoft", bits=bits, block_size=block, gather_axis=0, quantize_axis=1,
        )
    )  # fmt: skip
    if padded != hidden:
        bounds = [
            graph.add_initializer(f"{stem}_{what}", np.array([value], np.int64))
            for what, value in (("start", 0), ("end", hidden), ("axis", -1))
        ]
        nodes.append(
            helper.make_node("Slice", [gathered, *bounds], list(gather.output), f"{stem}_slice")
        )
    for node in nodes:
        node.metadata_props.extend(gather.metadata_props)
    return nodes


def _drop_unread(model) -> None:
    """Drop the Transposes and initializers nothing reads any more (the float table, shared)."""
    read = {name for n in model.graph.node for name in n.input}
    read |= {o.name for o in model.graph.output}
    nodes = [n for n in model.graph.node if n.op_type != "Transpose" or n.output[0] in read]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    drop_unused_initializers(model)


def tied_as_written(path, tables: list[TiedTable]) -> list[TiedTable]:
    """`tables` with the bits and block their heads have in the model at `path` (the budget's
    search may have moved a head to 8 bits after they were first written)."""
    import onnx

    from compress.quant.graph_edit import attribute

    graph = onnx.load(str(path), load_external_data=False).graph
    heads = {n.name.rsplit("_Q", 1)[0]: n for n in graph.node if n.op_type == "MatMulNBits"}
    return [
        t.model_copy(
            update={
                "bits": attribute(heads[t.head], "bits", t.bits),
                "block_size": attribute(heads[t.head], "block_size", t.block_size),
            }
        )
        if t.head in heads
        else t
        for t in tables
    ]
