"""Weight-only MatMulNBits quantization of a graph's MatMuls: which algorithm, how many bits per
node, the block size each node can take, and the accuracy_level the kernels run at.

ONNX Runtime's MatMulNBitsQuantizer does the packing; this module decides what it is asked:

- `rtn_symmetric` / `rtn_asymmetric`: round to nearest in blocks (ORT's default quantizer).
  Asymmetric is the default: on all-MiniLM-L6-v2 (block 32) its embeddings keep a cosine of
  0.9740 to the float model's against symmetric's 0.9681, at the same size (+0.4%) and speed.
- `hqq`: half-quadratic quantization (better codes, 0.978 there, but ORT's HQQ kernels ran
  3.5x slower on CPU).
- `k_quant`: ORT's k-quant search. Its packing crashes when a weight's rows make an odd number of
  blocks, one included (block 128 on a 384-wide weight: `cannot reshape array of size 576`), so
  each such node gets the largest smaller power-of-2 block that makes an even count
  (`fitting_blocks`); a node that has none is refused in one line.

GPTQ is not offered: ORT's port gave codes identical to round to nearest on 33 of 36 nodes of
a real encoder, so it would cost calibration time for nothing measurable.

A mix of 4 and 8 bits runs the quantizer twice: 8 bits on the nodes named for it, then the
algorithm at 4 bits on the rest (a MatMulNBits is no longer a MatMul, so the second run skips
them). accuracy_level is set on every MatMulNBits afterwards (HQQ's quantizer does not take it).
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from compress.models.onnx_files import save_onnx

if TYPE_CHECKING:
    from compress.quant.tied_head import TiedTable

Algorithm = Literal["rtn_symmetric", "rtn_asymmetric", "hqq", "k_quant"]
ALGORITHMS: tuple[Algorithm, ...] = ("rtn_symmetric", "rtn_asymmetric", "hqq", "k_quant")
SMALLEST_BLOCK = 16  # MatMulNBits' smallest block
EIGHT_BIT_BLOCK = 128  # the longest block an 8-bit node gets (eight_bit_block)


@dataclass(frozen=True)
class WeightMatMul:
    """A MatMul whose weight B is a 2-D float constant [K, N]."""

    node: str
    weight: str
    rows: int  # K: the reduction axis, cut into blocks
    columns: int  # N


@dataclass(frozen=True)
class WeightPlan:
    """How to quantize one graph's MatMuls."""

    algorithm: Algorithm
    block_size: int
    bits: Literal[4, 8] = 4  # for every node not in `eight_bit`
    accuracy_level: int = 0  # 0: unset (ORT's fp32 path on CPU)
    eight_bit: frozenset[str] = frozenset()  # MatMuls held at 8 bits
    excluded: frozenset[str] = frozenset()  # MatMuls kept in float
    blocks: dict[str, int] = field(default_factory=dict)  # per-node block sizes (k_quant)
    share_tied: bool = True  # a tied head's lookups read its blocks (compress.quant.tied_head)

    def bits_for(self, node: str) -> Literal[4, 8]:
        """The bits of MatMul `node` (one not kept in float)."""
        return 8 if self.bits == 8 or node in self.eight_bit else 4

    def block_for(self, bits: int, rows: int) -> int:
        """The block of a node of `rows` rows at `bits` (8 bits: `eight_bit_block`)."""
        return eight_bit_block(rows, self.block_size) if bits == 8 else self.block_size


def weight_matmuls(model) -> list[WeightMatMul]:
    """The graph's MatMuls with a 2-D float constant weight, in graph order."""
    import onnx

    constants = {i.name: i for i in model.graph.initializer}
    found = []
    for node in model.graph.node:
        weight = constants.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2 or weight.data_type != onnx.TensorProto.FLOAT:
            continue
        found.append(WeightMatMul(node.name, weight.name, int(weight.dims[0]), int(weight.dims[1])))
    return found


def output_heads(model) -> list[str]:
    """MatMuls with constant weights that write a graph output, directly or through the Add of
    a bias: a language model's head (the logits), a classifier's last layer."""
    outputs = {o.name for o in model.graph.output}
    constants = {i.name for i in model.graph.initializer}
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for tensor in node.input:
            readers.setdefault(tensor, []).append(node)
    heads = []
    for matmul in weight_matmuls(model):
        node = next(n for n in model.graph.node if n.name == matmul.node)
        written = node.output[0]
        after = readers.get(written, [])
        if (
            written not in outputs
            and len(after) == 1
            and after[0].op_type == "Add"
            and any(i in constants for i in after[0].input)
        ):
            written = after[0].output[0]
        if written in outputs:
            heads.append(matmul.node)
    return heads


def fitting_blocks(matmuls: list[WeightMatMul], block_size: int) -> dict[str, int]:
    """For k-quant: the nodes whose rows make an odd number of `block_size` blocks (one
    included: its packing of the zero points crashes on any odd count), each with the largest
    power-of-2 block below it that makes an even number (none: SMALLEST_BLOCK, which
    `odd_blocks` then names)."""
    adjusted = {}
    for matmul in matmuls:
        block = block_size
        while block > SMALLEST_BLOCK and -(-matmul.rows // block) % 2:
            block //= 2
        if block != block_size:
            adjusted[matmul.node] = block
    return adjusted


def odd_blocks(matmuls: list[WeightMatMul], blocks: dict[str, int], block_size: int) -> list[str]:
    """Nodes whose rows still make an odd number of blocks (one included): k-quant cannot pack
    their zero points."""
    odd = []
    for matmul in matmuls:
        count = -(-matmul.rows // blocks.get(matmul.node, block_size))
        if count % 2:
            odd.append(matmul.node)
    return odd


def quantize_weights(model, plan: WeightPlan):
    """`model` (a ModelProto, changed in place) with its MatMuls quantized as `plan` says;
    returns the quantized ModelProto."""
    matmuls = weight_matmuls(model)
    names = [m.node for m in matmuls]
    eight = set(plan.eight_bit) if plan.bits == 4 else set(names)
    eight -= set(plan.excluded)
    by_block: dict[int, set[str]] = {}
    for matmul in matmuls:
        if matmul.node in eight:
            by_block.setdefault(eight_bit_block(matmul.rows, plan.block_size), set()).add(
                matmul.node
            )
    for block, nodes in sorted(by_block.items()):
        skip = [n for n in names if n not in nodes]
        symmetric = plan.algorithm == "rtn_symmetric"
        model = _default(model, replace(plan, block_size=block), 8, symmetric, skip)
    if plan.bits == 4:
        skip = sorted(set(plan.excluded) | eight)
        model = _four_bits(model, plan, skip)
    set_accuracy_level(model, plan.accuracy_level)
    return model


def eight_bit_block(rows: int, block_size: int) -> int:
    """The block of an 8-bit node: the largest power of 2 up to EIGHT_BIT_BLOCK that divides its
    rows (none: `block_size`). 8-bit rounding error is 16x smaller than 4-bit's, so a longer block
    costs nothing measurable, and its scales take 3% of the weight instead of 12% at 32."""
    block = EIGHT_BIT_BLOCK
    while block > block_size and rows % block:
        block //= 2
    return max(block, block_size) if rows % block == 0 else block_size


def set_accuracy_level(model, level: int) -> None:
    """Set (or, for 0, remove) accuracy_level on every MatMulNBits of `model`."""
    from onnx import helper

    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        kept = [a for a in node.attribute if a.name != "accuracy_level"]
        del node.attribute[:]
        node.attribute.extend(kept)
        if level:
            node.attribute.append(helper.make_attribute("accuracy_level", level))


def _four_bits(model, plan: WeightPlan, skip: list[str]):
    nbits = _nbits_module()
    if plan.algorithm in ("rtn_symmetric", "rtn_asymmetric"):
        return _default(model, plan, 4, plan.algorithm == "rtn_symmetric", skip)
    if plan.algorithm == "hqq":
        config = nbits.HQQWeightOnlyQuantConfig(block_size=plan.block_size, bits=4)
    else:
        custom = {node: {"group_size": block} for node, block in plan.blocks.items()}
        config = nbits.KQuantWeightOnlyQuantConfig(customized_weight_config=custom or None)
    quantizer = nbits.MatMulNBitsQuantizer(
        model,
        block_size=plan.block_size,
        is_symmetric=False,
        nodes_to_exclude=skip,
        algo_config=config,
    )
    with contextlib.redirect_stdout(io.StringIO()):  # k-quant prints a progress bar
        quantizer.process()
    return quantizer.model.model


def _default(model, plan: WeightPlan, bits: int, symmetric: bool, skip: list[str]):
    quantizer = _nbits_module().MatMulNBitsQuantizer(
        model,
        bits=bits,
        block_size=plan.block_size,
        is_symmetric=symmetric,
        nodes_to_exclude=skip,
    )
    quantizer.process()
    return quantizer.model.model


def node_metadata(model) -> dict[str, list[tuple[str, str]]]:
    """Each node's metadata (the torch module it came from), by node name."""
    return {
        n.name: [(p.key, p.value) for p in n.metadata_props]
        for n in model.graph.node
        if n.metadata_props
    }


def copy_node_metadata(metadata: dict[str, list[tuple[str, str]]], quantized) -> None:
    """Give each MatMulNBits the metadata (`node_metadata` of the model before) of the MatMul
    it replaced; the quantizer makes new nodes without it."""
    for node in quantized.graph.node:
        if node.op_type != "MatMulNBits" or node.metadata_props:
            continue
        original = node.name.rsplit("_Q", 1)[0]
        for key, value in metadata.get(original, []):
            entry = node.metadata_props.add()
            entry.key, entry.value = key, value


def write(prepared: Path, target: Path, plan: WeightPlan) -> list[TiedTable]:
    """`prepared` with its MatMuls quantized as `plan` says, written to `target`; a head tied
    to an embedding table quantized once from it first (compress.quant.tied_head), which
    returns."""
    import onnx

    from compress.quant.tied_head import quantize_tied_heads

    model = onnx.load(str(prepared))
    metadata = node_metadata(model)  # read before the quantizer replaces the nodes in place
    tied = quantize_tied_heads(model, plan)
    quantized = quantize_weights(model, plan)
    del model  # the quantizer's result is the only model held while it is saved
    copy_node_metadata(metadata, quantized)
    save_onnx(quantized, target)
    return tied


def relevel(path: Path, level: int) -> None:
    import onnx

    model = onnx.load(str(path))
    set_accuracy_level(model, level)
    save_onnx(model, path)


def bits_of(path: Path) -> list[int]:
    """The bits of every MatMulNBits in `path`."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [
        next((a.i for a in n.attribute if a.name == "bits"), 4)
        for n in graph.node
        if n.op_type == "MatMulNBits"
    ]


def _nbits_module():
    """Import ORT's quantizer without letting it turn every library's logging up to INFO."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    from onnxruntime.quantization import matmul_nbits_quantizer

    root.setLevel(level)
    root.handlers[:] = handlers
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    return matmul_nbits_quantizer
