"""Accuracy-aware fallback: when a quantized model misses its accuracy budget, find the fewest
nodes to keep in float that meet it.

The model is quantized once and every quantized node is ranked by the error it adds
(compress.quant.sensitivity); the ranking is shared through the run's Context, so quantize.auto's
candidates and a later pass on the same file reuse it. The search then asks how many of the
worst nodes must go back to float (compress.quant.search): a guess from the ranking, a gallop
up from it, a bisection; each probe is one quantize + evaluate round, judged on a subset of
data.eval first and passed only on all of it (compress.quant.budget). Keeping a node in float
keeps its group in float: the nodes fused into it and the quantized producers of its inputs.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from compress.passes.base import BudgetMiss
from compress.quant.budget import BudgetJudge, Verdict
from compress.quant.ranking import Ranking, job_modules
from compress.quant.search import SearchResult, guess_from_noise, smallest_passing
from compress.quant.sensitivity import RankingFailed, SensitivityDetails
from compress.quant.sensitivity.cache import AnalysisCache
from compress.records import Record

if TYPE_CHECKING:
    from compress.passes.context import PassContext
    from compress.quant.sensitivity import Sensitivity

SENSITIVITY_SAMPLES = 64
# The quantize.auto candidate whose ranking is shown (and analysed by `compress analyze`).
AUTO_PREFERENCE = ("static-per-channel", "dynamic")

# quantize(node names kept in float, target path): writes a quantized model
Quantize = Callable[[list[str], Path], None]


class Attempt(Record):
    """One quantize + evaluate round of the fallback, as the report lists it."""

    round: int
    kept_in_float: int
    metric: float
    drop: float
    judged_on: Literal["data.eval", "subset of data.eval"]
    met: bool
    seconds: float


class SearchSummary(Record):
    rounds: int
    max_rounds: int
    candidate_sets: int
    order: list[str] = []  # round i kept the first attempts[i].kept_in_float of these
    seconds: float


class FallbackRounds(Record):
    """What a quantize.auto candidate's entry shows of its fallback: the rounds and their time."""

    verdict: str
    attempts: list[Attempt]
    search: SearchSummary


class Fallback(Record):
    """An int8 pass's ranking and accuracy-aware fallback, as its stage's details hold them:
    the ranking (`sensitivity`, unless turned off), and with a budget the rounds it took."""

    sensitivity: SensitivityDetails | RankingFailed | None = None
    accuracy_budget: float | None = None
    budget_met: bool | None = None
    float_nodes: list[str] = []
    verdict: str | None = None
    attempts: list[Attempt] = []
    search: SearchSummary | None = None
    modules: dict[str, str] = Field(
        default_factory=dict,
        description="the torch module each node named here came from, where the export recorded it",
    )

    def rounds(self) -> FallbackRounds | None:
        """The rounds, when a search was run."""
        if self.search is None or self.verdict is None:
            return None
        return FallbackRounds(verdict=self.verdict, attempts=self.attempts, search=self.search)

    def kept_round(self) -> Attempt | None:
        """The round whose model was written, judged on all of data.eval: the first within the
        budget with the fewest nodes held back, else the closest (as the search keeps it);
        None when nothing was judged."""
        met = [a for a in self.attempts if a.met]
        if met:
            return min(met, key=lambda a: a.kept_in_float)
        full = [a for a in self.attempts if a.judged_on == "data.eval"]
        return min(full, key=lambda a: a.drop) if full else None

    def missed_budget(self, stage: str, metric: str, held: str) -> BudgetMiss | None:
        """The search ended over budget, the closest attempt kept and written (`held`: what
        it held back, "3 node(s) in float"); None when it met the budget or had none."""
        if self.budget_met is not False:
            return None
        drops = [attempt.drop for attempt in self.attempts]
        drop = f"{metric} drop {min(drops):.4f}" if drops else f"the {metric} drop"
        return BudgetMiss(
            f"stage {stage} missed its accuracy budget: {drop} against its input, limit "
            f"{self.accuracy_budget}, with {held}; the model written carries that drop",
            carries_drop=True,
        )


@dataclass
class QuantizeJob:
    """One way to quantize one model, as the fallback drives it."""

    quantize: Quantize
    source: Path  # the pass's input: what the metric compares against, and the cache key
    prepared: Path  # the graph the quantizer reads (node names come from it)
    excluded: list[str]  # kept in float whatever happens (`exclude`)
    scheme: str  # the settings a node's quantization error depends on (see sensitivity.cache)
    report_ranking: bool = True  # rank the nodes for the report even when no search needs it
    max_float_bytes: int | None = None  # the most a float set's weights may add to the model
    held: str = "in float"  # where the search puts a node (quantize.int4's mix: "at 8 bits")
    # what holding each node costs (its weight's size): the search then tries the nodes in the
    # order of the noise each removes per unit of that cost, so the set it finds is small in
    # bytes, not only in count
    costs: dict[str, float] | None = None


@dataclass
class Round:
    """One quantize + evaluate round of the fallback."""

    index: int
    float_nodes: list[str]
    verdict: Verdict
    seconds: float
    path: Path

    def details(self) -> Attempt:
        return Attempt(
            round=self.index,
            kept_in_float=len(self.float_nodes),
            metric=self.verdict.metric,
            drop=self.verdict.drop,
            judged_on="data.eval" if self.verdict.full else "subset of data.eval",
            met=self.verdict.met,
            seconds=round(self.seconds, 2),
        )


def accuracy_budget(own: float | None, ctx: PassContext) -> float | None:
    """A pass's max_accuracy_drop, else the run's gate."""
    return own if own is not None else ctx.budget


def sensitivity_samples(ctx: PassContext) -> list[np.ndarray]:
    """Calibration samples when there are some (not eval data: that judges the result)."""
    if ctx.calibration is not None:
        return ctx.calibration.take(min(SENSITIVITY_SAMPLES, len(ctx.calibration)))
    return ctx.samples(SENSITIVITY_SAMPLES)


def relative_error(reference: np.ndarray, other: np.ndarray) -> float:
    reference, other = reference.astype(np.float64), other.astype(np.float64)
    return float(np.linalg.norm(other - reference) / max(float(np.linalg.norm(reference)), 1e-12))


def quantize_within_budget(
    job: QuantizeJob, target: Path, budget: float | None, max_rounds: int, ctx: PassContext
) -> Fallback:
    """Quantize to `target` and rank the nodes; with a `budget` (and data.eval), search for the
    fewest float nodes that meet it in at most `max_rounds` further rounds, and leave at
    `target` the first model found within it, else the closest. Returns the stage's details."""
    began = time.perf_counter()
    job.quantize(job.excluded, target)
    seconds = time.perf_counter() - began
    ranking = Ranking(job, target, ctx)
    if budget is None or ctx.eval is None:
        return Fallback(sensitivity=ranking.details() if job.report_ranking else None)
    metric = ctx.metric
    reference = ctx.shared(AnalysisCache).reference_outputs(
        job.source, ctx.eval, ctx.judged_output, metric
    )
    judge = BudgetJudge(reference, ctx.eval, metric, budget, ctx.judged_output)
    started = time.perf_counter()
    first = Round(0, [], judge.full(target), seconds + time.perf_counter() - started, target)
    ctx.log(f"  accuracy budget {budget} on data.eval")
    search = _Search(job, judge, target, ctx, [first])
    search.log(first)
    if not first.verdict.met and max_rounds > 0:
        sensitivity = ranking.get()
        if sensitivity is not None:
            search.run(sensitivity, max_rounds)
    outcome = search.finish(ranking.problem, max_rounds, time.perf_counter() - began)
    if job.report_ranking or ranking.measured:
        outcome.sensitivity = ranking.details()
    modules = job_modules(job)
    named = [*outcome.float_nodes, *(outcome.search.order if outcome.search else [])]
    outcome.modules = {n: modules[n] for n in named if n in modules}
    return outcome


class _Search:
    """The rounds of one fallback, and what it reports."""

    def __init__(self, job: QuantizeJob, judge: BudgetJudge, target: Path, ctx, rounds):
        self.job, self.judge, self.target, self.ctx = job, judge, target, ctx
        self.rounds: list[Round] = rounds
        self.sets: list[list[str]] = []
        self.result: SearchResult | None = None
        self.too_large = 0  # ranked sets left out for the weight they would keep in float

    def run(self, sensitivity: Sensitivity, max_rounds: int) -> None:
        self.sets, noise = float_sets(sensitivity, set(self.job.excluded), self.job.costs)
        if self.job.max_float_bytes is not None:
            fitting = fitting_sets(self.job.prepared, self.sets, self.job.max_float_bytes)
            self.too_large = len(self.sets) - fitting
            self.sets, noise = self.sets[:fitting], noise[:fitting]
        guess = guess_from_noise(noise, self.rounds[0].verdict.drop, self.judge.budget)
        self.result = smallest_passing(len(self.sets), self.probe, max_rounds, guess)

    def probe(self, prefix: int) -> bool:
        started = time.perf_counter()
        nodes = self.sets[prefix - 1]
        path = self.target.with_name(f"{self.target.stem}.fallback{prefix}.onnx")
        self.job.quantize(self.job.excluded + nodes, path)
        verdict = self.judge.judge_model(path)
        entry = Round(len(self.rounds), nodes, verdict, time.perf_counter() - started, path)
        self.rounds.append(entry)
        self.log(entry)
        return verdict.met

    def log(self, entry: Round) -> None:
        on = "" if entry.verdict.full else " on a subset"
        self.ctx.log(
            f"  round {entry.index}: {len(entry.float_nodes)} node(s) {self.job.held}: "
            f"{self.judge.metric} {entry.verdict.metric:.4f}, drop {entry.verdict.drop:.4f}{on} "
            f"({'within' if entry.verdict.met else 'over'} budget, {entry.seconds:.1f} s)"
        )

    def finish(self, problem: str | None, max_rounds: int, seconds: float) -> Fallback:
        chosen = self._chosen()
        for entry in self.rounds:
            if entry.path not in (chosen.path, self.target):
                entry.path.unlink(missing_ok=True)
        if chosen.path != self.target:
            shutil.move(chosen.path, self.target)
        largest = max(self.rounds, key=lambda r: len(r.float_nodes)).float_nodes
        return Fallback(
            accuracy_budget=self.judge.budget,
            budget_met=chosen.verdict.met,
            float_nodes=chosen.float_nodes,
            verdict=self._verdict(chosen, problem, max_rounds),
            attempts=[entry.details() for entry in self.rounds],
            search=SearchSummary(
                rounds=len(self.rounds) - 1,
                max_rounds=max_rounds,
                candidate_sets=len(self.sets),
                order=largest,
                seconds=round(seconds, 2),
            ),
        )

    def _chosen(self) -> Round:
        """The first round within the budget with the fewest float nodes, else the closest
        round judged on all of data.eval (a round rejected on the subset is judged on all of
        it first when its subset drop beats every full one)."""
        met = [r for r in self.rounds if r.verdict.met]
        if met:
            return min(met, key=lambda r: len(r.float_nodes))
        full = min((r for r in self.rounds if r.verdict.full), key=lambda r: r.verdict.drop)
        partial = [r for r in self.rounds if not r.verdict.full]
        if partial:
            hopeful = min(partial, key=lambda r: r.verdict.drop)
            if hopeful.verdict.drop < full.verdict.drop:
                hopeful.verdict = self.judge.full(hopeful.path)
                if hopeful.verdict.drop < full.verdict.drop:
                    return hopeful
        return full

    def _verdict(self, chosen: Round, problem: str | None, max_rounds: int) -> str:
        metric, budget = self.judge.metric, self.judge.budget
        count, drop, held = len(chosen.float_nodes), chosen.verdict.drop, self.job.held
        rounds = f"{len(self.rounds) - 1} round(s) after the first"
        if chosen.verdict.met and not count:
            return (
                f"{metric} drop {drop:.4f} is within the budget {budget} with every node quantized"
            )
        if chosen.verdict.met:
            return (
                f"kept {count} node(s) {held} to bring the {metric} drop to {drop:.4f} <= "
                f"{budget} ({rounds})"
            )
        return (
            f"budget not met: the closest was a {metric} drop of {drop:.4f} (limit {budget}) "
            f"with {count} node(s) {held}; {self._why_not(problem, max_rounds)}"
        )

    def _why_not(self, problem: str | None, max_rounds: int) -> str:
        if max_rounds == 0:
            return f"max_fallback_steps is 0, so no node was tried {self.job.held}"
        if problem is not None:
            return f"the nodes could not be ranked ({problem})"
        most = self.job.max_float_bytes
        limit = f"{most / 1e6:g} MB" if self.too_large and most is not None else ""
        if not self.sets and limit:
            return f"the costliest node alone keeps more than {limit} of weights in float"
        if not self.sets:
            return (
                f"no quantized node adds measurable error, so keeping nodes {self.job.held} "
                "cannot help"
            )
        if self.result is not None and self.result.exhausted and limit:
            return (
                f"keeping the {len(self.sets[-1])} costliest nodes in float (as many as "
                f"{limit} of weights allows) did not meet it"
            )
        if self.result is not None and self.result.exhausted:
            return (
                f"keeping all {len(self.sets[-1])} nodes that add error {self.job.held} did not "
                "meet it"
            )
        return f"max_fallback_steps ({max_rounds}) rounds ran out; more rounds may find a set"


def shown_sensitivity(
    rankings: dict[str, SensitivityDetails | RankingFailed | None], first: str | None
) -> SensitivityDetails | None:
    """quantize.auto's `sensitivity` detail from the rankings its candidates measured: the
    `first` candidate's (the chosen one), else its static per-channel candidate's, else the
    dynamic one's, else the first there is; None when none was measured."""
    order = [first, *AUTO_PREFERENCE, *rankings]
    for name in [n for n in order if n in rankings]:
        ranking = rankings[name]
        if isinstance(ranking, SensitivityDetails):
            return ranking.model_copy(update={"candidate": name})
    return None


def fitting_sets(prepared: Path, sets: list[list[str]], max_bytes: int) -> int:
    """How many of the nested `sets` keep at most `max_bytes` more in the model: a weight kept in
    float takes 4 bytes per value instead of int8's 1 (weights: float initializers of 2 or more
    dimensions that the nodes read)."""
    import onnx

    graph = onnx.load(str(prepared), load_external_data=False).graph
    sizes = {
        t.name: int(np.prod(t.dims))
        for t in graph.initializer
        if len(t.dims) >= 2 and t.data_type == onnx.TensorProto.FLOAT
    }
    reads = {n.name: [i for i in n.input if i in sizes] for n in graph.node}
    for count, nodes in enumerate(sets):
        weights = {name for node in nodes for name in reads.get(node, [])}
        if 3 * sum(sizes[w] for w in weights) > max_bytes:
            return count
    return len(sets)


def float_sets(
    sensitivity: Sensitivity, skip: set[str], costs: dict[str, float] | None = None
) -> tuple[list[list[str]], list[float]]:
    """The nodes kept in float for each prefix of the ranking (each a superset of the one before,
    a rank whose group is already in float merged into the previous one), and the noise each
    prefix's new rank removes. With `costs`, the ranking is ordered by noise per unit of cost."""
    sets: list[list[str]] = []
    noise: list[float] = []
    current: list[str] = []
    ranked = sensitivity.ranked(skip)
    if costs:
        ranked = sorted(ranked, key=lambda s: -s.added_noise / max(costs.get(s.node, 1.0), 1e-9))
    for score in ranked:
        new = [n for n in (score.group or [score.node]) if n not in current and n not in skip]
        if not new:  # the same model as the previous prefix
            if noise:
                noise[-1] += score.added_noise
            continue
        current = current + new
        sets.append(current)
        noise.append(score.added_noise)
    return sets, noise
