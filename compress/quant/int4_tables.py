"""quantize.int4's embedding tables (constant Gather tables) stored as int8, one scale per
column, unless an accuracy budget on data.eval shows the model meets it only without them, or
that they alone cost more than it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from compress.models.onnx_files import replace_onnx, save_onnx
from compress.passes.context import required

if TYPE_CHECKING:
    from compress.passes.context import PassContext
    from compress.quant.budget import Verdict
    from compress.quant.int4_details import Int4Details
    from compress.quant.int4_mix import MixJob


def store_tables(
    source: Path,
    target: Path,
    auto: bool,
    budget: float | None,
    ctx: PassContext,
    details: Int4Details,
) -> Verdict | None:
    """Store `target`'s embedding tables as int8, unless `auto` and the budget says no; says
    which in `details`. Returns the verdict on the model left at `target` where the budget
    judged the tables (None where nothing was judged)."""
    import onnx

    from compress.quant.weight_rewrites import quantize_embeddings

    model = onnx.load(str(target))
    tables = quantize_embeddings(model)
    if not tables:
        return None
    judged = auto and budget is not None and ctx.eval is not None
    candidate = target.with_suffix(".embeddings.onnx") if judged else target
    save_onnx(model, candidate)
    details.embedding_tables_int8 = tables
    verdict = None
    if judged and budget is not None:
        verdict = judge(source, candidate, budget, ctx)
        details.embeddings_drop = verdict.drop
        # Over budget, the tables are to blame if the model meets it without them, or if
        # they alone cost more than the whole budget.
        without = None if verdict.met else judge(source, target, budget, ctx)
        if without is not None and (without.met or verdict.drop - without.drop > budget):
            candidate.unlink()
            ctx.log(
                f"  int8 embedding tables take the drop to {verdict.drop} (budget {budget}, "
                f"{without.drop} without them): kept in float32; embeddings_int8: true forces "
                "them"
            )
            details.embedding_tables_int8, details.embeddings_kept_float = [], tables
            return without
        replace_onnx(candidate, target)
    ctx.log(f"  {len(tables)} embedding table(s) stored as int8: {', '.join(tables)}")
    return verdict


def tables_after_mix(
    without_tables: MixJob, source: Path, target: Path, found, auto: bool, ctx: PassContext, details
) -> None:
    """The mix at `target` carries int8 tables; with `auto`, a mix that missed the budget is
    judged again without them, and kept so when the tables are to blame (that judgement then
    is the last round in `details`, the one the model written has)."""
    import time

    from compress.quant.fallback import Attempt

    prepared, budget = without_tables.prepared, found.accuracy_budget
    shared = frozenset(t.table for t in details.tied_tables if t.shared)
    details.embedding_tables_int8 = embedding_tables(prepared, shared)
    if not details.embedding_tables_int8 or not auto or found.budget_met:
        return
    started = time.perf_counter()
    without = target.with_suffix(".float-tables.onnx")
    without_tables.write(details.eight_bit, without)
    verdict = judge(source, without, budget, ctx)
    drop = verdict.drop
    closest = min(a.drop for a in found.attempts if a.judged_on == "data.eval")
    details.embeddings_drop = round(closest - drop, 6)
    # the tables are to blame if the mix meets the budget without them, or if they alone cost
    # more than the whole budget
    if drop <= budget or closest - drop > budget:
        without.replace(target)
        details.embedding_tables_int8, details.embeddings_kept_float = (
            [],
            embedding_tables(prepared, shared),
        )
        details.attempts = [
            *details.attempts,
            Attempt(
                round=len(details.attempts), kept_in_float=len(found.float_nodes),
                metric=verdict.metric, drop=drop, judged_on="data.eval", met=verdict.met,
                seconds=round(time.perf_counter() - started, 2),
            ),
        ]  # fmt: skip
        details.budget_met = verdict.met
        if verdict.met:
            details.verdict = (
                f"{ctx.metric} drop {drop:.4f} <= {budget} with the embedding tables in float32 "
                f"and {len(found.float_nodes)} MatMul(s) moved to 8 bits"
            )
        ctx.log(f"  int8 embedding tables kept in float32 ({drop} without them)")
        return
    without.unlink()


def embedding_tables(prepared: Path, shared: frozenset[str] = frozenset()) -> list[str]:
    """The embedding tables (constant Gather tables of 2 dimensions) of `prepared`, but those
    in `shared` (tied to a head: its blocks serve the lookup)."""
    import onnx

    graph = onnx.load(str(prepared), load_external_data=False).graph
    tables = {i.name: i for i in graph.initializer}
    return [
        n.input[0]
        for n in graph.node
        if n.op_type == "Gather"
        and n.input[0] in tables
        and len(tables[n.input[0]].dims) == 2
        and tables[n.input[0]].data_type == onnx.TensorProto.FLOAT
        and n.input[0] not in shared
    ]


def judge(source: Path, candidate: Path, budget: float, ctx: PassContext) -> Verdict:
    """The drop of `candidate` against the float `source` on data.eval."""
    from compress.quant.budget import BudgetJudge
    from compress.quant.sensitivity.cache import AnalysisCache

    output, metric, data = ctx.judged_output, ctx.metric, required(ctx.eval, "eval")
    reference = ctx.shared(AnalysisCache).reference_outputs(source, data, output, metric)
    return BudgetJudge(reference, data, metric, budget, output).full(candidate)
