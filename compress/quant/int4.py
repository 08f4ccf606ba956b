"""quantize.int4: weight-only MatMulNBits (4 bits, or 8), with the head and embeddings at 8 bits.

Gemm nodes with constant weights are rewritten as MatMul first (compress.quant.weight_rewrites),
a head tied to an embedding table quantized once and shared with the lookup
(compress.quant.tied_head), the MatMuls quantized as compress.quant.nbits plans them, the
embedding tables stored as int8 unless that misses the accuracy budget, and accuracy_level
chosen by timing (int4_speed).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from compress.errors import ConfigError
from compress.models.onnx_files import save_onnx
from compress.passes.base import OnnxPass, OnnxPassParams, PassInput, PassResult
from compress.passes.registry import register
from compress.quant.fallback import accuracy_budget
from compress.quant.int4_details import Int4Details
from compress.quant.int8 import excluded_nodes
from compress.quant.nbits import ALGORITHMS, Algorithm, WeightPlan, bits_of, relevel, write
from compress.quant.nbits_pack import pack, packed_summary
from compress.quant.tied_head import tied_as_written

if TYPE_CHECKING:
    from compress.passes.context import PassContext
    from compress.quant.budget import Verdict


class Int4Params(OnnxPassParams):
    algorithm: Algorithm | Literal["auto"] = Field(
        default="auto",
        description="rtn_asymmetric (round to nearest with a zero point per block), "
        "rtn_symmetric, hqq (better codes, slower kernels on CPU), k_quant; auto: "
        "rtn_symmetric for a decoder with its key/value cache (its zero points make a decode "
        "step's MatMuls ~23% slower on CPU), rtn_asymmetric for any other model (closer codes "
        "at the same speed at batch shapes)",
    )
    bits: Literal[4, 8] = Field(default=4, description="bits per weight of the MatMuls")
    block_size: int = Field(default=32, ge=16, description="weights per scale (a power of 2)")
    accuracy_level: Literal[0, 1, 2, 3, 4, "auto"] = Field(
        default="auto",
        description="MatMulNBits' compute: 0 unset (fp32 on CPU), 1 fp32, 2 fp16, 3 bf16, "
        "4 int8 activations; auto: 0 or 4, whichever runs faster as the report times the model "
        "(a decoder's decode steps, with report.generation or its defaults; else the first "
        "batch size)",
    )
    head_bits: Literal[4, 8] = Field(
        default=8,
        description="bits of a MatMul that writes a model output (a language model's head: a "
        "4-bit head is a known accuracy trap)",
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="MatMul or Gemm nodes to keep in float: node names, op types, torch module "
        "names (encoder.layer.3.output.dense) or globs (encoder.layer.*.attention.*)",
    )
    embeddings_int8: bool | Literal["auto"] = Field(
        default="auto",
        description="also store embedding tables (constant Gather) as int8; auto: yes, unless "
        "an accuracy budget and data.eval show they make the model miss it",
    )
    max_accuracy_drop: float | None = Field(
        default=None,
        ge=0,
        description="move the MatMuls whose 4-bit weights cost most to 8 bits until the drop on "
        "data.eval is within this; also judges embeddings_int8: auto (default: "
        "gates.max_accuracy_drop)",
    )
    max_fallback_steps: int = Field(
        default=8,
        ge=0,
        description="at most this many more quantize + evaluate rounds to find the MatMuls to "
        "hold at 8 bits",
    )
    sensitivity: bool = Field(
        default=True,
        description="with a budget, rank the 4-bit MatMuls by the error they add, for the "
        "report; when false they are ranked only if the search for the mix needs it",
    )

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError("must be a power of 2 (16, 32, 64, 128, ...)")
        return value


@register("quantize.int4")
class Int4WeightOnly(OnnxPass[Int4Params]):
    """Weight-only MatMul/Gemm at 4 bits (ONNX Runtime's MatMulNBits): their weights shrink ~6x.

    The head (a MatMul writing a model output) stays at 8 bits unless head_bits: 4; embedding
    tables (Gather from a constant) are stored as int8 with one scale per column and
    dequantized after the lookup, unless a budget (max_accuracy_drop or
    gates.max_accuracy_drop) and data.eval show the model meets it only without them. A head
    tied to an embedding table is quantized once from the table, and the lookup reads the
    head's blocks (GatherBlockQuantized): one copy in the file. MatMuls that read the same
    input with the same bits (a layer's query, key and value; an MLP's gate and up) are written
    as one MatMulNBits and a Split, as ONNX Runtime GenAI's builder packs them: fewer nodes per
    decode step, the same codes.
    accuracy_level: auto times the shape the report times with int8 activations (4) and without
    (0) and keeps the faster: a decoder's decode steps (report.generation, or its defaults), else
    the first batch size. Level 4 made a one-token decode step 2x faster here and a batch-8 prefill
    30% slower, so no one level is right for every shape.

    Sample YAML:
        - type: quantize.int4
          algorithm: auto
          block_size: 32
    """

    Params = Int4Params
    Details = Int4Details
    # the embedding tables' int8 is judged on the report's output against the budget, and
    # accuracy_level: auto by the report's timing
    reads = ("report", "gates.max_accuracy_drop")

    def check(self, config) -> None:
        self.require_eval_for_budget(config)
        if self.params.algorithm == "hqq" and self.params.bits == 8:
            raise ConfigError(f"{self.key}.bits: 8 takes rtn_symmetric or rtn_asymmetric")

    def apply(self, given: PassInput, ctx: PassContext) -> PassResult:
        import onnx

        from compress.quant.weight_rewrites import (
            gemms_as_matmul,
            transposed_weights_as_initializers,
        )

        source, target = given.files()
        proto = onnx.load(str(source))
        rewritten = gemms_as_matmul(proto)
        ties = self._ties(proto, source)
        tied = transposed_weights_as_initializers(proto, frozenset(ties))
        prepared = target.with_suffix(".matmul.onnx")
        save_onnx(proto, prepared)
        if rewritten:
            ctx.log(f"  {len(rewritten)} Gemm node(s) rewritten as MatMul for 4-bit weights")
        if tied:
            ctx.log(f"  {len(tied)} MatMul(s) reading a transposed constant given their own copy")
        plan = self._plan(proto, prepared, source, list(ties))
        del proto  # every step after reads `prepared`: the float weights are not held twice
        details = Int4Details(
            algorithm=plan.algorithm,
            bits=plan.bits,
            block_size=plan.block_size,
            smaller_blocks=plan.blocks,
            gemm_rewritten_as_matmul=len(rewritten),
            tied_weights_copied=tied,
        )
        plan = self._write(prepared, target, plan, ctx, details)
        budget = accuracy_budget(self.params.max_accuracy_drop, ctx)
        if budget is not None and ctx.eval is not None and plan.bits == 4:
            self._mix(source, prepared, target, plan, budget, ctx, details, ties)
            details.tied_tables = tied_as_written(target, details.tied_tables)
        else:
            from compress.quant.int4_tables import store_tables

            verdict = None
            if self.params.embeddings_int8 is not False:
                auto = self.params.embeddings_int8 == "auto"
                verdict = store_tables(source, target, auto, budget, ctx, details)
            if budget is not None and ctx.eval is not None:
                judged_once(source, target, budget, verdict, ctx, details)
        prepared.unlink(missing_ok=True)
        details.packed = pack(target)
        if details.packed:
            ctx.log(f"  {packed_summary(details.packed)}")
        for table in details.tied_tables:
            ctx.log(f"  {table.line()}")
        return PassResult(details=details)

    def _mix(self, source, prepared, target, plan, budget: float, ctx, details, ties) -> None:
        """The fewest MatMuls at 8 bits that meet `budget`, the embedding tables int8 in every
        round unless embeddings_int8: false; with auto, a mix that misses the budget is tried
        again without them."""
        from dataclasses import replace

        from compress.quant.int4_mix import MixJob, mix_within_budget

        tables = self.params.embeddings_int8 is not False
        mix = MixJob(prepared, plan, tables, ties)
        steps = self.params.max_fallback_steps
        found = mix_within_budget(mix, source, target, budget, steps, ctx, self.params.sensitivity)
        # a round's set may name more than MatMuls (a tied head's Transpose): only they move
        details.eight_bit = sorted((plan.eight_bit | set(found.float_nodes)) & mix.matmuls())
        for name, value in found:
            if name not in ("float_nodes", "modules"):
                setattr(details, name, value)
        details.modules = found.modules
        details.four_bit = bits_of(target).count(4)
        details.modules |= named_modules(prepared, details.eight_bit)
        if tables:
            from compress.quant.int4_tables import tables_after_mix

            auto = self.params.embeddings_int8 == "auto"
            tables_after_mix(replace(mix, tables=False), source, target, found, auto, ctx, details)

    def _ties(self, proto, source: Path) -> dict[str, float]:
        """The heads of `proto` tied to an embedding table (not kept in float by `exclude`),
        each with its weight's size: `write` quantizes them once from the table."""
        from compress.quant.tied_head import tied_heads

        p = self.params
        keep = set(excluded_nodes(source, p.exclude, self.key, source))
        tables = {i.name: i.dims for i in proto.graph.initializer}
        return {
            head: float(tables[table][0] * tables[table][1])
            for head, table, _ in tied_heads(proto)
            if head not in keep
        }

    def _plan(self, proto, prepared: Path, source: Path, tied: list[str]) -> WeightPlan:
        """The weight plan for `proto` (its Gemms already MatMuls; `tied`: its heads tied to a
        table, which `write` quantizes from the table), before the level is known."""
        from compress.quant.nbits import fitting_blocks, odd_blocks, output_heads, weight_matmuls

        matmuls = weight_matmuls(proto)
        if not matmuls:
            raise ConfigError(
                f"{self.key}: {self.name} found no MatMul or Gemm with constant weights in the "
                "model (Conv is not 4-bit quantized); use quantize.static or quantize.dynamic"
            )
        p = self.params
        algorithm = resolved_algorithm(p.algorithm, proto)
        blocks = fitting_blocks(matmuls, p.block_size) if algorithm == "k_quant" else {}
        odd = odd_blocks(matmuls, blocks, p.block_size) if algorithm == "k_quant" else []
        if odd:
            raise ConfigError(
                f"{self.key}.algorithm: k_quant cannot pack {odd[0]} (its width is an odd number "
                "of blocks at every block size); use rtn_asymmetric or exclude it"
            )
        heads = output_heads(proto) if p.head_bits == 8 and p.bits == 4 else []
        heads += [head for head in tied if p.head_bits == 8 and p.bits == 4 and head not in heads]
        return WeightPlan(
            algorithm=algorithm,
            block_size=p.block_size,
            bits=p.bits,
            eight_bit=frozenset(heads),
            excluded=frozenset(excluded_nodes(prepared, p.exclude, self.key, source)),
            blocks=blocks,
            share_tied=p.embeddings_int8 is not False,
        )

    def _write(self, prepared: Path, target: Path, plan: WeightPlan, ctx, details) -> WeightPlan:
        """Quantize `prepared` to `target` as `plan` says, at the accuracy_level asked or timed;
        fills `details`, returns the plan with its level."""
        from dataclasses import replace

        from compress.quant.int4_speed import choose_accuracy_level

        details.tied_tables = write(prepared, target, plan)
        asked = self.params.accuracy_level
        if asked == "auto":
            level, details.accuracy_level_timing = choose_accuracy_level(target, ctx)
        else:
            level = asked
        plan = replace(plan, accuracy_level=level)
        relevel(target, level)
        details.accuracy_level = level
        counts = bits_of(target)
        details.four_bit = counts.count(4)
        details.eight_bit = sorted(plan.eight_bit) if plan.bits == 4 else []
        details.modules = named_modules(prepared, details.eight_bit)
        return plan


def resolved_algorithm(asked: Algorithm | Literal["auto"], proto) -> Algorithm:
    """The rounding `asked` for, `auto` settled by what the model is timed by. A decoder with
    its key/value cache spends its time in one-token decode steps, where MLAS's int8-activation
    kernels pay for asymmetric zero points with a correction per block: 2.79 ms against 2.26 ms
    for six 896x4864 MatMul pairs at batch 1 (level 4; 11.9 against 9.7 ms at level 0) and the
    same at 64 rows (ORT 1.2x, this AVX-512 VNNI machine). There, rtn_symmetric, as the GenAI
    builder, NNCF and GPTQ default to; elsewhere rtn_asymmetric, whose codes are closer (cosine
    0.974 against 0.968 on all-MiniLM-L6-v2) at the same speed."""
    from compress.measure.decoder_feeds import is_decoder_proto

    if asked != "auto":
        return asked
    return "rtn_symmetric" if is_decoder_proto(proto) else "rtn_asymmetric"


def judged_once(
    source: Path, target: Path, budget: float, verdict: Verdict | None, ctx: PassContext, details
) -> None:
    """bits: 8 has no mix to search: the model written is judged against the budget (the
    embedding tables' verdict is that judgement where they were judged) and `details` say
    whether it holds, as one round of the search would."""
    import time

    from compress.quant.fallback import Attempt
    from compress.quant.int4_tables import judge

    started = time.perf_counter()
    verdict = verdict or judge(source, target, budget, ctx)
    met = verdict.met
    details.accuracy_budget, details.budget_met = budget, met
    details.attempts = [
        Attempt(
            round=0, kept_in_float=0, metric=verdict.metric, drop=verdict.drop,
            judged_on="data.eval", met=met, seconds=round(time.perf_counter() - started, 2),
        )
    ]  # fmt: skip
    details.verdict = (
        f"{ctx.metric} drop {verdict.drop:.4f} is {'within' if met else 'over'} the budget "
        f"{budget} with its MatMuls at 8 bits (bits: 8 leaves no mix to search)"
    )
    ctx.log(f"  accuracy budget {budget} on data.eval: {details.verdict}")


def named_modules(path: Path, nodes: list[str]) -> dict[str, str]:
    """Node -> torch module for those of `nodes` whose module `path` recorded."""
    from compress.quant.module_names import module_names

    modules = module_names(path)
    return {n: modules[n] for n in nodes if n in modules}


__all__ = ["ALGORITHMS", "Int4Details", "Int4Params", "Int4WeightOnly"]
