"""What quantize.int4 reports: its settings, the mix of 4 and 8 bits, and with a budget the
ranking and the search (a Fallback record); the report draws the ranking and mix as a table."""

from __future__ import annotations

from pydantic import Field

from compress.passes.base import BudgetMiss, DetailsTable, PassDetails
from compress.quant.fallback import Fallback
from compress.quant.module_names import shown
from compress.quant.nbits_pack import PackedGroup, packed_summary
from compress.quant.tied_head import TiedTable

SHOWN_NODES = 20  # rows of the report's ranking table


class Int4Details(Fallback, PassDetails):
    """What quantize.int4 did; with a budget, the 4-bit MatMuls' ranking and the search for the
    mix (Fallback: `float_nodes` is empty, the MatMuls it moved to 8 bits are in `eight_bit`)."""

    algorithm: str | None = None
    bits: int | None = None
    block_size: int | None = None
    smaller_blocks: dict[str, int] = Field(
        default_factory=dict,
        description="k_quant: nodes whose width is an odd number of blocks, with the block used",
    )
    accuracy_level: int | None = Field(default=None, description="what the MatMulNBits run at")
    accuracy_level_timing: str | None = Field(
        default=None, description="accuracy_level: auto: the timing it was chosen by"
    )
    eight_bit: list[str] = Field(
        default_factory=list,
        description="MatMuls held at 8 bits (the head, and those the budget moved there)",
    )
    four_bit: int | None = Field(default=None, description="how many MatMuls are at 4 bits")
    gemm_rewritten_as_matmul: int | None = None
    tied_weights_copied: list[str] = Field(
        default_factory=list,
        description="MatMuls that read a constant through a Transpose that no embedding lookup "
        "reads (not a tied table), given the transposed constant as their own weight so it is "
        "quantized",
    )
    tied_tables: list[TiedTable] = Field(
        default_factory=list,
        description="embedding tables a head reads transposed (a tied LM head), quantized once "
        "at the head's bits and, shared, read by the lookups too (GatherBlockQuantized)",
    )
    packed: list[PackedGroup] = Field(
        default_factory=list,
        description="MatMuls that read the same input (query, key and value; gate and up), "
        "written as one MatMulNBits and a Split",
    )
    embedding_tables_int8: list[str] = []
    embeddings_drop: float | None = Field(
        default=None, description="the drop the int8 embedding tables cost on data.eval"
    )
    embeddings_kept_float: list[str] = Field(
        default_factory=list, description="tables kept in float32: int8 would miss the budget"
    )

    def lines(self) -> list[str]:
        lines = super().lines()
        if self.algorithm is not None:
            level = f", accuracy_level {self.accuracy_level}"
            lines.append(
                f"{self.algorithm}, block {self.block_size}{level}: {self.four_bit} MatMul(s) "
                f"at {self.bits} bits, {len(self.eight_bit)} at 8 bits"
                + (
                    f" ({', '.join(shown(n, self.modules) for n in self.eight_bit)})"
                    if self.eight_bit
                    else ""
                )
            )
        if self.tied_weights_copied:
            lines.append(
                f"{len(self.tied_weights_copied)} MatMul(s) reading a constant through a "
                "Transpose quantized from their own copy of it"
            )
        lines += [table.line() for table in self.tied_tables]
        lines += [packed_summary(self.packed)] if self.packed else []
        lines += [self.verdict] if self.verdict else []
        if self.accuracy_level_timing:
            lines.append(self.accuracy_level_timing)
        if self.smaller_blocks:
            lines.append(f"smaller blocks (odd block counts): {self.smaller_blocks}")
        tables = self.embedding_tables_int8
        lines += [f"embedding tables stored as int8: {', '.join(tables)}"] if tables else []
        return lines

    def table(self, metric: str) -> DetailsTable | None:
        """The ranking and the mix: the MatMuls by the error their 4-bit weights add, and the
        bits each got."""
        from compress.quant.sensitivity import SensitivityDetails

        ranking = self.sensitivity
        if not isinstance(ranking, SensitivityDetails) or not ranking.nodes:
            return None
        eight = set(self.eight_bit)
        rows = [
            [
                str(rank),
                node.module or node.node,
                f"{node.score:.3%}",
                "8" if node.node in eight else "4",
            ]
            for rank, node in enumerate(ranking.nodes[:SHOWN_NODES], start=1)
        ]
        return DetailsTable(
            f"MatMuls by the error their 4-bit weights add at the output ({ranking.ranked_by}), "
            f"and their bits ({self.four_bit} at 4, {len(eight)} at 8)",
            ["rank", "module (or node)", "error", "bits"],
            rows,
        )

    def budget_miss(self, stage: str, metric: str) -> BudgetMiss | None:
        """The mix ended over budget: the closest one was written."""
        held = (
            "its MatMuls at 8 bits"
            if self.bits == 8
            else f"{len(self.eight_bit)} MatMul(s) at 8 bits"
        )
        return self.missed_budget(stage, metric, held)
