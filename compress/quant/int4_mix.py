"""quantize.int4 with an accuracy budget: the fewest MatMuls at 8 bits (the rest at 4) that meet it.

The search is the int8 fallback's (compress.quant.fallback): the model is quantized once, every
4-bit MatMul ranked by the error it adds (compress.quant.sensitivity, isolated: each MatMulNBits
fed the float model's values), and the worst are moved to 8 bits, a prefix of the ranking at a
time (a guess from the ranking's noise, a gallop, a bisection), until the drop on data.eval is
within the budget. What the int8 fallback keeps in float, this holds at 8 bits. The nodes are
tried in the order of the noise each removes per weight (a node 4x larger must remove 4x the
noise to go first), so the mix found is small in bytes: the point of 4 bits.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from compress.models.onnx_files import save_onnx
from compress.quant.fallback import Fallback, QuantizeJob, quantize_within_budget
from compress.quant.nbits import WeightPlan

if TYPE_CHECKING:
    from compress.passes.context import PassContext


@dataclass
class MixJob:
    """One model's 4/8-bit mixes: `prepared` (Gemms as MatMuls) written as `plan` says, with the
    MatMuls a round names at 8 bits (a tied head among them: `tied`), and its embedding tables
    as int8 when `tables`."""

    prepared: Path
    plan: WeightPlan
    tables: bool
    tied: dict[str, float] = field(default_factory=dict)  # tied heads, their weights' sizes

    def write(self, eight_bit: list[str], target: Path) -> None:
        from compress.quant.nbits import write

        matmuls = self.matmuls()
        # the fallback hands the job's skipped nodes back with each round's: only MatMuls that
        # the plan does not keep in float move to 8 bits
        moved = {n for n in eight_bit if n in matmuls and n not in self.plan.excluded}
        write(self.prepared, target, replace(self.plan, eight_bit=self.plan.eight_bit | moved))
        if self.tables:
            _int8_tables(target)

    def matmuls(self) -> set[str]:
        import onnx

        from compress.quant.nbits import weight_matmuls

        model = onnx.load(str(self.prepared), load_external_data=False)
        return {m.node for m in weight_matmuls(model)} | set(self.tied)

    def weight_sizes(self) -> dict[str, float]:
        """Each MatMul's weight size: 8 bits cost it the same ~0.5 byte a weight more whatever
        the node, so the search moves the nodes that remove the most noise per weight."""
        import onnx

        from compress.quant.nbits import weight_matmuls

        model = onnx.load(str(self.prepared), load_external_data=False)
        return {m.node: float(m.rows * m.columns) for m in weight_matmuls(model)} | self.tied

    def skipped(self) -> list[str]:
        """What the ranking leaves out: MatMuls kept in float or already at 8 bits, and the
        embedding lookups (their tables are judged apart)."""
        import onnx

        graph = onnx.load(str(self.prepared), load_external_data=False).graph
        constants = {i.name for i in graph.initializer}
        lookups = [n.name for n in graph.node if n.op_type == "Gather" and n.input[0] in constants]
        return sorted(set(self.plan.excluded) | set(self.plan.eight_bit) | set(lookups))


def mix_within_budget(
    mix: MixJob,
    source: Path,
    target: Path,
    budget: float,
    max_rounds: int,
    ctx: PassContext,
    ranked: bool = True,
) -> Fallback:
    """Write to `target` the mix with the fewest 8-bit MatMuls found within `budget` (else the
    closest); returns the ranking (measured for the report when `ranked`, else only if the
    search needs it) and the rounds, the 8-bit MatMuls the search added in `float_nodes`."""
    plan = mix.plan
    job = QuantizeJob(
        mix.write,
        source,
        mix.prepared,
        mix.skipped(),
        scheme=f"quantize.int4 {plan.algorithm} block {plan.block_size} level "
        f"{plan.accuracy_level} tables {mix.tables}",
        report_ranking=ranked,
        held="at 8 bits",
        costs=mix.weight_sizes(),
    )
    return quantize_within_budget(job, target, budget, max_rounds, ctx)


def _int8_tables(path: Path) -> None:
    import onnx

    from compress.quant.weight_rewrites import quantize_embeddings

    model = onnx.load(str(path))
    if quantize_embeddings(model):
        save_onnx(model, path)
