"""quantize.auto: try the quantizations that fit the model, measure each, keep the one a user
would (the rules are in auto_choice), and never one slower than the input.

A model is offered the int8 variants (static, the recovery candidates, dynamic); a decoder
exported with its key/value cache is offered weight-only candidates and dynamic instead
(`decoder_candidates`), and is timed on its decode steps (report.generation, or its defaults:
compress.measure.speed.generation_timing).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from compress.errors import PassError
from compress.measure.size import size_bytes
from compress.passes.base import (
    BudgetMiss,
    DetailsTable,
    OnnxPass,
    OnnxPassParams,
    PassDetails,
    PassInput,
    PassResult,
)
from compress.passes.context import required
from compress.passes.registry import get_pass, register
from compress.quant.auto_candidates import candidates_for, decoder_candidates
from compress.quant.auto_records import CandidateEntry, InputFigures
from compress.quant.fallback import (
    AUTO_PREFERENCE,
    Fallback,
    accuracy_budget,
    shown_sensitivity,
)
from compress.quant.int8 import preprocess
from compress.quant.sensitivity import SensitivityDetails
from compress.quant.sensitivity.cache import AnalysisCache
from compress.records import Record

if TYPE_CHECKING:
    from compress.config import LoadedConfig
    from compress.measure.speed import SpeedCheck, Timer
    from compress.passes.context import PassContext
    from compress.quant.auto_choice import Compare
    from compress.quant.auto_trials import Trial

DEFAULT_BUDGET = 0.01
CLEAR_WIN = 1.25  # a choice this much faster than the input is not timed again: noise is ~3%


class AutoTiming(Record):
    machine: str = Field(description="quiet, busy or unknown during the final timing")
    retimed: int
    timed: Literal["first batch", "decode steps"] = Field(
        default="first batch",
        description="what the candidates were timed on: the report's first batch size, or a "
        "decoder's greedy decode steps over its cache (report.generation's first batch size, "
        "or its defaults)",
    )
    shape: str | None = Field(default=None, description="the timed shape, in words")


class AutoDetails(PassDetails):
    """quantize.auto's details: every candidate with its verdict, the one chosen (none: the
    input was kept) and why (`reason`)."""

    accuracy_budget: float | None = None
    input: InputFigures | None = None
    candidates: list[CandidateEntry] = []
    chosen: str | None = None
    timing: AutoTiming | None = None
    seconds: float | None = None
    sensitivity: SensitivityDetails | None = None

    def table(self, metric: str) -> DetailsTable | None:
        """The candidates measured: the input's figures, then each one's, with its verdict."""
        if not self.candidates or self.input is None:
            return None
        source = self.input
        rows = [
            ["input", f"{source.p50_ms:.3f}", f"{source.size_bytes / 1024:.1f}"]
            + [f"{source.metric:.4f}", "", "", ""]
        ]
        for c in self.candidates:
            rows.append(
                [
                    c.name,
                    _cell(c.p50_ms, ".3f"),
                    _cell(c.size_bytes / 1024 if c.size_bytes else None, ".1f"),
                    _cell(c.metric, ".4f"),
                    _cell(c.drop, ".4f"),
                    str(len(c.float_nodes))
                    + (f" ({len(c.eight_bit)} at 8 bits)" if c.eight_bit else ""),
                    c.verdict or "",
                ]
            )
        decode = self.timing is not None and self.timing.timed == "decode steps"
        speed = "decode ms" if decode else "p50 ms"
        headers = ["candidate", speed, "size KB", metric, "drop", "kept in float", "verdict"]
        return DetailsTable(f"candidates (budget {self.accuracy_budget})", headers, rows)

    def budget_miss(self, stage: str, metric: str) -> BudgetMiss | None:
        """The input was kept because every candidate measured was over budget: no accuracy is
        lost, but the int8 model the recipe asked for is not there either."""
        budget = self.accuracy_budget
        measured = [(c.name, c.drop) for c in self.candidates if c.drop is not None]
        if self.chosen is not None or not measured or budget is None:
            return None
        if any(drop <= budget for _, drop in measured):
            return None
        closest, drop = min(measured, key=lambda m: m[1])
        return BudgetMiss(
            f"stage {stage} kept its input: no candidate held the accuracy budget {budget} "
            f"(the closest, {closest}, dropped {metric} by {drop:.4f}); raise "
            "max_accuracy_drop, or exclude the nodes that lose accuracy, to get a quantized "
            "model",
            carries_drop=False,
        )


def _cell(value: float | None, spec: str) -> str:
    """A figure for the candidates' table; n/a where it was not measured."""
    return "n/a" if value is None else format(value, spec)


class AutoParams(OnnxPassParams):
    max_accuracy_drop: float | None = Field(
        default=None,
        ge=0,
        description="budget on data.eval (default: gates.max_accuracy_drop, else 0.01)",
    )
    exclude: list[str] = Field(
        default_factory=list, description="node names or op types every candidate keeps in float"
    )
    max_fallback_steps: int = Field(
        default=4,
        ge=0,
        description="per candidate: groups of costly nodes put back in float (a weight-only "
        "candidate's: MatMuls moved to 8 bits)",
    )


@register("quantize.auto")
class AutoQuantization(OnnxPass[AutoParams]):
    """Tries the quantizations that fit the model, keeps the fastest within the accuracy budget.

    Every candidate that fits the model (static per-channel / per-tensor, static with depthwise
    convolutions in float, the recovery candidates, dynamic) is quantized fully and judged, all
    are timed briefly together, and the accuracy-aware fallback runs only where it can still
    produce the choice (compress.quant.auto_trials); each is listed in the report with why it
    won or lost. A decoder exported with its key/value cache is offered weight-only candidates
    instead of the static ones (quantize.int4 at 4 bits with its 4/8-bit mix, and at 8 bits)
    beside dynamic, and every candidate is timed on greedy decode steps over the cache
    (report.generation, or its defaults within the model's positions). Within the budget,
    faster wins, and candidates as fast within noise go by size; one as fast as the input and
    smaller beats it; candidates meeting gates.min_size_ratio / min_speedup (against the pass's
    input) are preferred. A candidate slower than the input beyond noise is never kept; when
    none beats the input, the input model is kept.

    Sample YAML:
        - type: quantize.auto
          max_accuracy_drop: 0.01
    """

    Params = AutoParams
    Details = AutoDetails
    reads = ("report", "gates")  # candidates are timed as the report times, chosen by the gates

    def check(self, config: LoadedConfig) -> None:
        self.require_data(config, "eval", f"{self.key}: {self.name} judges candidates on data.eval")

    def apply(self, given: PassInput, ctx: PassContext) -> PassResult:
        from compress.measure.decoder_feeds import is_decoder_file
        from compress.measure.speed import DecodeCheck, model_timer
        from compress.quant.auto_choice import choose  # imports the latency code: not at load
        from compress.quant.auto_trials import finalists, try_candidates

        source, target = given.files()
        started = time.perf_counter()
        budget = accuracy_budget(self.params.max_accuracy_drop, ctx) or DEFAULT_BUDGET
        folder = ctx.workdir / f"auto-{target.stem}"
        folder.mkdir(exist_ok=True)
        decoder = is_decoder_file(source)
        if decoder:
            candidates = decoder_candidates(source)
        else:
            # Candidates name nodes of the pre-processed graph: each int8 pass pre-processes
            # `source` the same way before it quantizes, so the names are found there.
            prepared = preprocess(source, folder / "prepared.onnx", ctx)
            candidates = candidates_for(prepared, has_calibration=ctx.calibration is not None)
        timer = model_timer(ctx.timing, decoder, ctx.samples, ctx.log, ctx.positions)
        # candidates rank their nodes only if their fallback runs; see _sensitivity
        trials = try_candidates(
            candidates,
            lambda c, steps, path, room: self._run_candidate(
                c, budget, steps, source, path, ctx, rank=False, float_mb=room
            ),
            source,
            folder,
            budget,
            self.params.max_fallback_steps,
            ctx,
            timer,
        )
        timed = finalists(trials)
        check = timer({"input": source, **timed}, False)
        p50 = check.p50
        results = [self._entry(t, p50) for t in trials]
        figures = InputFigures(
            size_bytes=size_bytes(source),
            metric=self._judge(source, ctx).reference_value,
            p50_ms=p50["input"],
        )
        if check.busy:  # no speed can be trusted, and size alone could pick a slower model
            chosen, reason = None, f"{check.machine_note()}; the input model is kept"
            for entry in results:
                entry.verdict = entry.verdict or f"not judged: {check.machine_note()}"
        else:
            gates = ctx.gates
            chosen, reason = choose(results, figures, budget, check.shape, gates, paired(check))
        if chosen:
            paths = {"input": source, "chosen": timed[chosen]}
            chosen, reason = self._confirm(chosen, reason, results, paths, figures, timer)
        shutil.copyfile(timed[chosen] if chosen else source, target)
        sensitivity = self._sensitivity(trials, chosen, budget, source, folder, ctx, decoder)
        seconds = time.perf_counter() - started
        ctx.log(f"  {reason} ({seconds:.0f} s)")
        details = AutoDetails(
            accuracy_budget=budget,
            input=figures,
            candidates=results,
            chosen=chosen,
            reason=reason,
            timing=AutoTiming(
                machine=check.machine.state,
                retimed=check.retimed,
                timed="decode steps" if isinstance(check, DecodeCheck) else "first batch",
                shape=check.shape.removeprefix("at "),
            ),
            seconds=round(seconds, 2),
            sensitivity=sensitivity,
        )
        return PassResult(details=details)

    def _sensitivity(
        self, trials, chosen, budget, source, folder, ctx, decoder: bool
    ) -> SensitivityDetails | None:
        """The node ranking the report shows: one a candidate's fallback measured (the chosen
        one's first), else the static per-channel (or dynamic) candidate's, measured now. Not
        for a decoder: ranking its nodes quantizes it once more and runs every quantized MatMul
        on the float model's values over the calibration windows, which costs more than the
        choice did (`compress analyze` ranks them, as does quantize.int4 with a budget)."""
        measured = {t.name: t.details.sensitivity for t in trials if t.details is not None}
        shown = shown_sensitivity(measured, chosen)
        if shown or decoder:
            return shown
        by_name = {t.name: t.candidate for t in trials if t.plain is not None}
        preferred = next((by_name[n] for n in AUTO_PREFERENCE if n in by_name), None)
        if preferred is None:
            return None
        ranked = self._run_candidate(
            preferred, budget, 0, source, folder / "ranked.onnx", ctx, rank=True
        )
        return shown_sensitivity({preferred.name: ranked.sensitivity}, None)

    @staticmethod
    def _entry(trial: Trial, p50: dict[str, float]) -> CandidateEntry:
        """The candidate as the report lists it: a finalist with its final model's figures (its
        metric and drop as its pass judged that model)."""
        from compress.quant.int4_details import Int4Details

        entry, details = trial.entry, trial.details
        rounds = details.rounds() if details is not None else None
        if rounds is not None:
            entry.fallback = rounds
        entry.seconds = round(trial.seconds, 2)
        if isinstance(details, Int4Details):
            entry.eight_bit, entry.accuracy_level = details.eight_bit, details.accuracy_level
        if trial.name not in p50 or trial.final is None or trial.judged is None:
            return entry
        entry.size_bytes = size_bytes(trial.final)
        entry.metric = trial.judged.metric
        entry.drop = trial.judged.drop
        entry.float_nodes = trial.candidate.float_nodes + (
            details.float_nodes if details is not None else []
        )
        entry.p50_ms = p50[trial.name]
        return entry

    @staticmethod
    def _judge(source: Path, ctx: PassContext):
        """Scores against the float model's outputs, shared by every candidate (ctx.analysis)."""
        from compress.measure.evaluate import Judge

        data = required(ctx.eval, "eval")
        reference = ctx.shared(AnalysisCache).reference_outputs(
            source, data, ctx.judged_output, ctx.metric
        )
        return Judge(reference, data, ctx.metric, ctx.judged_output)

    def _confirm(
        self,
        chosen: str,
        reason: str,
        results: list[CandidateEntry],
        paths: dict[str, Path],
        figures: InputFigures,
        timer: Timer,
    ) -> tuple[str | None, str]:
        """Time the choice against the input (`paths`: input, chosen) once more, by the rules it
        was chosen by: a win that does not repeat was noise; a re-timed tie keeps a smaller
        candidate."""
        from compress.quant.auto_choice import confirm

        entry = next(e for e in results if e.name == chosen)
        if entry.p50_ms is not None and entry.p50_ms * CLEAR_WIN <= figures.p50_ms:
            return chosen, f"{reason}; a clear win: not timed again"
        check = timer(paths, False)
        p50 = check.p50
        if check.busy:  # the choice was made on a quiet timing; this one cannot overturn it
            return chosen, f"{reason}; not confirmed: {check.machine_note()}"
        timed = entry.timed("chosen", p50["chosen"])
        assert timed is not None  # the choice reached the final timing
        rejection = confirm(timed, figures.timed(p50["input"]), check.shape, paired(check))
        if rejection is None:
            retimed = f"{p50['chosen']:.3f} ms vs {p50['input']:.3f} ms"
            return chosen, f"{reason}; timed again: {retimed}"
        entry.verdict = rejection
        return None, f"{chosen} looked best, but {rejection}; the input model is kept"

    def _run_candidate(
        self, candidate, budget, steps, source, path, ctx, rank, float_mb=None
    ) -> Fallback:
        """The candidate's pass with at most `steps` fallback rounds (an int8 pass's keeping at
        most `float_mb` of weights in float); its nodes are ranked when `rank` or when the
        fallback needs it."""
        pass_class = get_pass(candidate.pass_type)
        settings = {
            **candidate.settings,
            "exclude": self.params.exclude + candidate.float_nodes,
            "max_accuracy_drop": budget,
            "max_fallback_steps": steps,
            "sensitivity": rank,
        }
        if not candidate.weight_only:
            settings["max_float_weight_mb"] = float_mb
        params = pass_class.Params.model_validate(settings)
        given = PassInput(source=source, target=path)
        details = pass_class(params, self.key).apply(given, ctx).details
        if not isinstance(details, Fallback):  # every candidate's pass has the fallback
            raise PassError(f"{self.key}: {candidate.pass_type} has no accuracy-aware fallback")
        return details


def paired(check: SpeedCheck) -> Compare:
    """quantize.auto's `compare` for models timed together (by the names they were timed
    under): their paired verdict."""
    return lambda timed, other: check.verdict(timed.name, other.name)
