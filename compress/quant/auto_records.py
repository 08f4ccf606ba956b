"""quantize.auto's records, from the first trial to the report: the `Candidate` it tries (an
int8 pass, or quantize.int4's weight-only 4 or 8 bits), the `CandidateEntry` the report lists
for it (filled as the candidate is screened, searched, timed and judged), the input's
`InputFigures`, and `Timed`, what the choice compares speeds by."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from compress.quant.fallback import FallbackRounds
from compress.records import Amount, Count, Record


@dataclass
class Candidate:
    """One way quantize.auto tries: a pass with its own params (`settings`), the nodes it keeps
    in float besides `exclude`, and whether it quantizes weights only (quantize.int4: its
    search holds the costliest MatMuls at 8 bits, not in float)."""

    name: str
    pass_type: str
    settings: dict[str, Any] = field(default_factory=dict)  # the pass's params
    float_nodes: list[str] = field(default_factory=list)  # kept in float besides `exclude`
    weight_only: bool = False


@dataclass(frozen=True)
class Timed:
    """A model as the choice compares it: its name as it was timed ("input" for the pass's
    input), its p50 at the batch the choice is made on, and its size."""

    name: str
    p50_ms: float
    size_bytes: int


class InputFigures(Record):
    """The pass's input, as the candidates are compared with it."""

    size_bytes: Count
    metric: float
    p50_ms: Amount

    def timed(self, p50_ms: float | None = None) -> Timed:
        """As timed (with `p50_ms` when it was timed again)."""
        return Timed("input", self.p50_ms if p50_ms is None else p50_ms, self.size_bytes)


class FullyQuantized(Record):
    p50_ms: Amount
    drop: float


class CandidateEntry(Record):
    """One candidate as the report lists it: what it is, what it measured, why it won or lost
    (figures only for those that reached the final timing)."""

    name: str
    settings: dict[str, Any] = {}
    fully_quantized: FullyQuantized | None = None
    fallback: FallbackRounds | None = None
    seconds: Amount | None = None
    size_bytes: Count | None = None
    metric: float | None = None
    drop: float | None = None
    float_nodes: list[str] = []
    eight_bit: list[str] = Field(
        default_factory=list,
        description="a weight-only candidate's MatMuls at 8 bits (the head, and those its "
        "search moved there); the rest at its bits",
    )
    accuracy_level: int | None = Field(
        default=None, description="a weight-only candidate's MatMulNBits accuracy_level"
    )
    p50_ms: Amount | None = Field(
        default=None,
        description="its p50 in the final timing (ms): a decode step where decode steps were "
        "timed (quantize.auto's timing.timed)",
    )
    verdict: str | None = None

    def timed(self, name: str | None = None, p50_ms: float | None = None) -> Timed | None:
        """As the final timing measured it (under `name`, with `p50_ms` when it was timed
        again); None when it did not reach the final timing."""
        if self.p50_ms is None or self.size_bytes is None:
            return None
        ms = self.p50_ms if p50_ms is None else p50_ms
        return Timed(name or self.name, ms, self.size_bytes)
