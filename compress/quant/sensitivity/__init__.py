"""Per-node quantization sensitivity: quantize once, run the float and the quantized graph on
calibration samples with every intermediate tensor exposed (tensors, isolate, twins), score each
quantized node by the error it adds (nodes), and rank them by the error each alone causes at the
model's output (impact).

The ranking is what the accuracy-aware fallback searches over, what report.json shows in a
stage's `details.sensitivity`, and what `compress analyze` writes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from compress.quant.sensitivity.nodes import NodeScore, changed_nodes, ranked, score_nodes
from compress.records import Record

SHOWN_IN_REPORT = 50
METHODS = {
    "output_error": "each quantized node's own error (measured with every quantized node reading "
    "the float model's values) added to the float model at that node alone: output_error is "
    "the relative RMS error it causes at the model's first output; added_error and sqnr_db are "
    "its own output's",
    "added_error": "relative RMS error a node adds to its own output beyond the worst of its "
    "inputs (noise-to-signal powers subtracted; isolated: its inputs were the float values)",
}


@dataclass
class Sensitivity:
    """The quantized nodes of one quantization of one model, worst first."""

    nodes: list[NodeScore]
    samples: int  # calibration samples both graphs ran
    isolated: bool = True  # each node measured on float inputs (else: along the quantized graph)
    quantized: set[str] = field(default_factory=set)  # every node the quantizer changed
    seconds: float = 0.0

    @property
    def scored(self) -> int:
        return len(self.nodes)

    @property
    def unscored(self) -> int:
        """Changed nodes no score covers (outputs the two graphs could not compare)."""
        covered = {name for n in self.nodes for name in (n.node, *n.fused)}
        return len(self.quantized - covered)

    @property
    def ranked_by(self) -> str:
        measured = any(n.output_error is not None for n in self.nodes)
        return "output_error" if measured else "added_error"

    def ranked(self, skip: AbstractSet[str] = frozenset()) -> list[NodeScore]:
        """Nodes that add error, worst first, leaving out the ones in `skip`."""
        return [n for n in self.nodes if n.score > 0 and n.node not in skip]

    def details(
        self, limit: int | None = SHOWN_IN_REPORT, modules: dict[str, str] | None = None
    ) -> SensitivityDetails:
        """For report.json and sensitivity.json: the worst `limit` nodes (None: all), each with
        the torch module it came from where `modules` (node -> module) knows it."""
        shown = self.nodes if limit is None else self.nodes[:limit]
        return SensitivityDetails(
            ranked_by=self.ranked_by,
            method=METHODS[self.ranked_by],
            isolated=self.isolated,
            samples=self.samples,
            quantized_nodes=len(self.quantized),
            scored=self.scored,
            unscored=self.unscored,
            shown=len(shown),
            seconds=round(self.seconds, 2),
            nodes=[NodeDetails.of(n, (modules or {}).get(n.node)) for n in shown],
        )


class NodeDetails(Record):
    """One scored node as report.json and sensitivity.json list it (see NodeScore)."""

    node: str
    module: str | None = None  # the torch module it came from, where the export recorded it
    op_type: str
    tensor: str
    added_error: float
    sqnr_db: float
    input_sqnr_db: float | None = None
    output_error: float | None = None
    fused: list[str] = []
    group: list[str] = []
    broken: bool | None = None  # only when true

    @classmethod
    def of(cls, score: NodeScore, module: str | None = None) -> NodeDetails:
        return cls(
            node=score.node,
            module=module,
            op_type=score.op_type,
            tensor=score.tensor,
            added_error=score.added_error,
            sqnr_db=score.sqnr_db,
            input_sqnr_db=score.input_sqnr_db,
            output_error=score.output_error,
            fused=score.fused,
            group=score.group,
            broken=score.broken or None,
        )

    @property
    def score(self) -> float:
        """What the ranking ordered by (see SensitivityDetails.ranked_by)."""
        return self.added_error if self.output_error is None else self.output_error


class SensitivityDetails(Record):
    """A ranking of quantized nodes, worst first: a stage's `details.sensitivity`, and
    sensitivity.json's `sensitivity`."""

    ranked_by: Literal["output_error", "added_error"]
    method: str
    isolated: bool
    samples: int
    quantized_nodes: int
    scored: int
    unscored: int
    shown: int
    seconds: float
    nodes: list[NodeDetails]
    candidate: str | None = None  # quantize.auto: the candidate whose ranking this is


class RankingFailed(Record):
    """A stage's `details.sensitivity` when the nodes could not be ranked."""

    error: str | None


def _with_output_impact(nodes, float_path, comparison, samples) -> list[NodeScore]:
    """`nodes` with the error each causes at the model's output, ranked by it."""
    from compress.quant.sensitivity.impact import output_impact

    tensors = list(dict.fromkeys(n.tensor for n in nodes))
    impact = output_impact(float_path, comparison.combined, comparison.twins, tensors, samples)
    return ranked([replace(n, output_error=round(math.sqrt(impact[n.tensor]), 6)) for n in nodes])


def restricted_to(sensitivity: Sensitivity, changed: set[str]) -> Sensitivity:
    """`sensitivity` for a quantization that changed only `changed` (a subset of its nodes)."""
    nodes = [
        replace(
            n,
            fused=[f for f in n.fused if f in changed],
            group=[g for g in n.group if g in changed],
        )
        for n in sensitivity.nodes
        if n.node in changed or any(f in changed for f in n.fused)
    ]
    return replace(sensitivity, nodes=nodes, quantized=set(changed))


def measure_sensitivity(
    float_path: Path,
    quant_path: Path,
    samples: list[np.ndarray],
    workdir: Path,
    skip: AbstractSet[str] = frozenset(),
) -> Sensitivity:
    """Rank the nodes `quant_path` quantized (leaving out `skip`: kept in float on purpose) by
    the error each adds on `samples` (arrays in input order)."""
    import onnx

    from compress.quant.sensitivity.tensors import compare_tensors

    start = time.perf_counter()
    comparison = compare_tensors(float_path, quant_path, samples, workdir)
    float_graph = onnx.load(str(float_path), load_external_data=False).graph
    quant_graph = onnx.load(str(quant_path), load_external_data=False).graph
    nodes = score_nodes(float_graph, quant_graph, comparison, set(skip))
    if comparison.combined is not None:
        try:
            nodes = _with_output_impact(nodes, float_path, comparison, samples)
        except Exception:  # noqa: S110 - the nodes' own errors still rank them
            pass
        finally:
            comparison.combined.unlink(missing_ok=True)
    return Sensitivity(
        nodes=nodes,
        isolated=comparison.isolated,
        samples=len(samples[0]),
        quantized=changed_nodes(float_graph, quant_graph) - set(skip),
        seconds=time.perf_counter() - start,
    )
