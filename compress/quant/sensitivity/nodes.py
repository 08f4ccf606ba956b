"""Score every quantized node of a graph by the error it adds, from the tensor errors of
compress.quant.sensitivity.tensors.

A node's own score (`added_error`) is the noise it adds, not the noise it inherits: with the
isolated comparison (every quantized node fed the float values) its output's relative RMS error;
with graphs run apart, the noise-to-signal power ratio (1 / SQNR) of its output minus the worst
of its inputs', square-rooted. Powers subtract where decibels would not: a node that takes a
tensor from 60 dB to 40 dB adds 1% error, one that takes it from 12 dB to 9 dB adds 29%, and
the second is the one that costs accuracy. The ranking then orders by the error each node
causes at the model's output (compress.quant.sensitivity.impact), where measured.

Quantizers rename and fuse: dynamic quantization replaces a MatMul by MatMulInteger under a new
name (its output keeps its name), and drops a Gather's output altogether; static QDQ fuses
Conv+Relu into the Conv, which then writes the Relu's output. A float tensor that is gone from
the quantized graph is not measured; its error is inherited from its producer's inputs, and its
producer is scored together with the node that reads it (`fused`). In a QDQ graph the float node
keeps its name and reads DequantizeLinear outputs; the tensors compared are the op's own, so a
node is charged for the rounding of its inputs too, which is why keeping it in float also keeps
the quantized producers of its inputs in float (their output quantization is what rounds them).
"""

from __future__ import annotations

import math
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from compress.quant.sensitivity.tensors import Comparison, TensorError

FLOOR_DB = -40.0  # what a ruined tensor (RUINED noise ratio) shows
CEILING_DB = 120.0  # what an exact tensor shows, instead of infinity


@dataclass
class NodeScore:
    """One quantized node (with the nodes fused into it) and the error it adds."""

    node: str  # the node's name in the float graph (what `exclude` takes)
    op_type: str
    tensor: str  # its output that was compared
    added_error: float  # relative RMS error it adds to `tensor`: sqrt(noise ratio out - in)
    sqnr_db: float  # SQNR of `tensor` in the quantized graph
    input_sqnr_db: float | None  # SQNR of its worst input (None: isolated, inputs were float)
    output_error: float | None = None  # relative RMS error of the model's output from it alone
    fused: list[str] = field(default_factory=list)  # float nodes scored with it (renamed, fused)
    group: list[str] = field(default_factory=list)  # what goes back to float to keep it in float
    broken: bool = False  # its output has NaN or infinities the float model does not have

    @property
    def score(self) -> float:
        """What the ranking orders by: the error at the model's output where it was measured,
        else the error the node adds to its own output."""
        return self.added_error if self.output_error is None else self.output_error

    @property
    def added_noise(self) -> float:
        return self.score**2


def decibels(noise_ratio: float) -> float:
    if noise_ratio <= 0:
        return CEILING_DB
    return round(max(FLOOR_DB, min(CEILING_DB, -10 * math.log10(noise_ratio))), 2)


def changed_nodes(float_graph, quant_graph) -> set[str]:
    """Float nodes the quantizer replaced, renamed or rewired to dequantized inputs."""
    twins = {n.name: n for n in quant_graph.node if n.name}
    return {
        n.name
        for n in float_graph.node
        if n.name
        and n.op_type != "Constant"
        and (n.name not in twins or list(twins[n.name].input) != list(n.input))
    }


def score_nodes(
    float_graph, quant_graph, comparison: Comparison, skip: AbstractSet[str] = frozenset()
) -> list[NodeScore]:
    """Every changed node (not in `skip`) whose output could be compared, worst first. With an
    isolated comparison a node's inputs carry no error (it read the float values)."""
    errors = comparison.errors
    graph = _Graph(float_graph, quant_graph, errors)
    changed = changed_nodes(float_graph, quant_graph) - set(skip)
    noise: dict[str, float] = {}  # tensor -> noise ratio, measured or inherited
    scores = []
    for node in float_graph.node:
        inherited = max((noise.get(t, 0.0) for t in graph.activations(node.input)), default=0.0)
        if comparison.isolated:
            inherited = 0.0
        measured = [t for t in node.output if graph.measured(t)]
        for t in node.output:
            noise[t] = errors[t].noise_ratio if t in measured else inherited
        members = graph.region(node)
        if not measured or not any(m.name in changed for m in members):
            continue
        worst = max(measured, key=lambda t: noise[t])
        output = noise[worst]
        shown = graph.shown_node(members, measured[0])
        scores.append(
            NodeScore(
                node=shown.name,
                op_type=shown.op_type,
                tensor=worst,
                added_error=round(math.sqrt(max(output - inherited, 0.0)), 6),
                sqnr_db=decibels(output),
                input_sqnr_db=None if comparison.isolated else decibels(inherited),
                fused=[m.name for m in members if m is not shown and m.name in changed],
                group=graph.float_group(members, changed),
                broken=any(errors[t].broken for t in measured),
            )
        )
    return ranked(scores)


def ranked(scores: list[NodeScore]) -> list[NodeScore]:
    return sorted(scores, key=lambda s: (-s.score, s.sqnr_db, s.node))


class _Graph:
    """Look-ups over the float graph and its quantized twin."""

    def __init__(self, float_graph, quant_graph, errors: dict[str, TensorError]):
        self.errors = errors
        self.initializers = {i.name for i in float_graph.initializer}
        self.producers = {o: n for n in float_graph.node for o in n.output if o}
        self.quant_producers = {o: n for n in quant_graph.node for o in n.output if o}
        self.quant_tensors = set(self.quant_producers) | {i.name for i in quant_graph.input}

    def measured(self, tensor: str) -> bool:
        return tensor in self.errors and self.errors[tensor].usable

    def activations(self, tensors) -> list[str]:
        return [t for t in tensors if t and t not in self.initializers]

    def region(self, node) -> list:
        """`node` and the producers of the tensors it reads that the quantized graph no longer
        has (fused into it, or replaced by a quantized tensor), recursively."""
        members, stack, seen = [node], [node], {id(node)}
        while stack:
            for tensor in self.activations(stack.pop().input):
                producer = self.producers.get(tensor)
                if tensor in self.quant_tensors or producer is None or id(producer) in seen:
                    continue
                seen.add(id(producer))
                members.append(producer)
                stack.append(producer)
        return members

    def shown_node(self, members: list, output: str):
        """The member that writes `output` in the quantized graph (the Conv of a fused
        Conv+Relu), else the node itself."""
        writer = self.quant_producers.get(output)
        return next(
            (m for m in members if writer is not None and m.name == writer.name), members[0]
        )

    def float_group(self, members: list, changed: set[str]) -> list[str]:
        """The changed members, and the changed producers of what the members read from outside:
        the float graph's, and the quantized graph's (with Conv+Relu fused, the Conv writes the
        Relu's output, and only keeping the Conv in float stops it being quantized)."""
        names = [m.name for m in members if m.name in changed]
        inside = {o for m in members for o in m.output}
        for member in members:
            for tensor in self.activations(member.input):
                if tensor in inside:
                    continue
                for producer in (self.producers.get(tensor), self.quant_producers.get(tensor)):
                    name = producer.name if producer is not None else None
                    if name in changed and name not in names:
                        names.append(name)
        return names
